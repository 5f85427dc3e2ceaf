// `pam gateway --broker URL[,URL…] --site NAME`: no listening socket. The gateway dials a broker over a
// WebSocket, registers its site, key and target names, reports its tunnel count, answers the sealed
// offers the broker relays, pings to keep the link alive, and re-registers whenever the broker goes
// away — at the next broker of the list first, then round the list with backoff. Tunnels already up
// do not depend on this link at all.

import { randomBytes } from 'node:crypto';
import WebSocket from 'ws';
import { TunnelError } from '../machines/errors.js';
import type { GatewayKeyPair } from '../adapters/sealed-signalling.js';
import { brokerProtocol, heartbeat, parseMessage, type GatewayToBroker } from '../broker/protocol.js';
import { ClearRefusal, type Signalling } from './signalling.js';

export interface BrokerLinkOptions {
  /** The brokers' base URLs, http(s)://HOST:PORT, tried in order: one registration at a time. */
  readonly brokers: readonly string[];
  readonly site: string;
  /** PAM_BROKER_TOKEN. */
  readonly token: string;
  readonly key: GatewayKeyPair;
  readonly targets: readonly string[];
  readonly signalling: Signalling;
  readonly log: (line: string) => void;
  /** Each (re-)registration, with how many there were before and the broker that took it. */
  readonly onRegistered?: (count: number, broker: string) => void;
  readonly pingIntervalMs?: number;
  /** How often a changed tunnel count is reported (default 1 s). */
  readonly loadIntervalMs?: number;
  /** TLS: extra CA for a broker with a private certificate (NODE_EXTRA_CA_CERTS also works). */
  readonly ca?: string;
}

export interface BrokerLink {
  /** Rejects with a TunnelError when the broker refuses for good (token, site taken): no retry helps. */
  readonly failed: Promise<never>;
  close(): void;
}

/** Backoff before reconnect n (1-based): 0.5 s doubling to 10 s, with jitter so gateways do not stampede. */
const backoffMs = (attempt: number) => Math.min(500 * 2 ** (attempt - 1), 10_000) * (0.75 + Math.random() * 0.5);

export function brokerSocketUrl(broker: string): URL {
  const url = new URL(broker);
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw new TunnelError('usage', `--broker '${broker}' must be an http(s):// URL`);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  url.pathname = `${url.pathname.replace(/\/+$/, '')}/v1/gateways`;
  return url;
}

export function connectBroker(options: BrokerLinkOptions): BrokerLink {
  const urls = options.brokers.map(brokerSocketUrl);
  if (urls.length === 0) throw new TunnelError('usage', '--broker needs at least one http(s):// URL');
  const pingIntervalMs = options.pingIntervalMs ?? 10_000;
  const loadIntervalMs = options.loadIntervalMs ?? 1_000;
  // One id for the life of this process: the brokers count it as one gateway wherever it registers.
  const id = randomBytes(8).toString('hex');
  let closed = false;
  let attempt = 0;
  let index = 0;
  let registrations = 0;
  let current: WebSocket | undefined;
  let retry: NodeJS.Timeout | undefined;
  let fail!: (error: TunnelError) => void;
  const failed = new Promise<never>((_, reject) => (fail = reject));
  failed.catch(() => undefined);

  const stop = (error: TunnelError) => {
    closed = true;
    clearTimeout(retry);
    current?.terminate();
    fail(error);
  };

  function open(): void {
    if (closed) return;
    attempt += 1;
    const broker = options.brokers[index]!;
    const ws = new WebSocket(urls[index]!, {
      headers: { authorization: `Bearer ${options.token}` },
      handshakeTimeout: 5_000,
      maxPayload: 256 * 1024,
      ...(options.ca ? { ca: options.ca } : {}),
    });
    current = ws;
    ws.on('unexpected-response', (_request, response) => {
      if (response.statusCode === 401) {
        options.log(`the broker ${broker} refused PAM_BROKER_TOKEN`);
        stop(new TunnelError('authRefused', `the broker ${broker} refused PAM_BROKER_TOKEN: set the broker's token on the gateway`));
      } else {
        options.log(`the broker ${broker} answered HTTP ${response.statusCode} instead of a WebSocket: is it a pam broker?`);
      }
      ws.terminate();
    });
    ws.on('open', () => {
      const register: GatewayToBroker = {
        type: 'register',
        protocol: brokerProtocol,
        id,
        tunnels: options.signalling.peerCount(),
        site: options.site,
        targets: [...options.targets],
        key: options.key.publicKey.toString('base64'),
      };
      ws.send(JSON.stringify(register));
      heartbeat(ws, pingIntervalMs, () => options.log('the broker stopped answering pings: reconnecting'));
    });
    ws.on('message', (data) => {
      const message = parseMessage(data.toString(), 'broker');
      if (!message) return;
      if (message.type === 'registered') {
        attempt = 0;
        options.onRegistered?.(registrations, broker);
        registrations += 1;
        let reported = options.signalling.peerCount();
        const load = setInterval(() => {
          const tunnels = options.signalling.peerCount();
          if (tunnels === reported) return;
          reported = tunnels;
          answer(ws, { type: 'load', tunnels });
        }, loadIntervalMs);
        ws.once('close', () => clearInterval(load));
      } else if (message.type === 'refused') {
        options.log(`the broker refused site ${options.site}: ${message.reason}`);
        stop(new TunnelError('gatewayUnreachable', `the broker ${broker} refused site '${options.site}': ${message.reason}`));
      } else if (message.type === 'offer') {
        options.signalling.handle(Buffer.from(message.sealed, 'base64'), message.client, message.iceServers).then(
          (sealed) =>
            answer(ws, { type: 'answer', id: message.id, sealed: sealed.toString('base64'), tunnels: options.signalling.peerCount() }),
          (error: unknown) => {
            if (error instanceof ClearRefusal)
              return answer(ws, { type: 'answer', id: message.id, status: error.status, error: error.message });
            options.log(`internal error answering an offer: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
            answer(ws, { type: 'answer', id: message.id, status: 500, error: 'internal error' });
          },
        );
      }
    });
    ws.on('error', (error: NodeJS.ErrnoException) => {
      if (attempt <= urls.length || attempt % 10 === 0) options.log(`broker ${broker}: ${error.code ?? error.message}; retrying`);
    });
    ws.on('close', () => {
      if (closed) return;
      const next = options.brokers[(index + 1) % urls.length]!;
      if (registrations > 0 && attempt === 0)
        options.log(
          `lost the broker ${broker}: re-registering${urls.length > 1 ? ` at ${next}` : ''} (tunnels already up are not affected)`,
        );
      // The next broker of the list at once; once every one has failed, backoff before each round.
      index = (index + 1) % urls.length;
      const delayMs = attempt < urls.length ? 100 : backoffMs(attempt - urls.length + 1);
      retry = setTimeout(open, delayMs);
    });
  }

  open();
  return {
    failed,
    close() {
      closed = true;
      clearTimeout(retry);
      current?.close(1000, 'gateway stopping');
      current?.terminate();
    },
  };
}

function answer(ws: WebSocket, message: GatewayToBroker): void {
  if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message));
}
