// `pam gateway --broker URL --site NAME`: no listening socket. The gateway dials the broker over a
// WebSocket, registers its site, key and target names, answers the sealed offers the broker relays,
// pings to keep the link alive, and re-registers with backoff whenever the broker goes away. Tunnels
// already up do not depend on this link at all.

import WebSocket from 'ws';
import { TunnelError } from '../machines/errors.js';
import type { GatewayKeyPair } from '../adapters/sealed-signalling.js';
import { brokerProtocol, heartbeat, parseMessage, type GatewayToBroker } from '../broker/protocol.js';
import { ClearRefusal, type Signalling } from './signalling.js';

export interface BrokerLinkOptions {
  /** The broker's base URL, http(s)://HOST:PORT. */
  readonly broker: string;
  readonly site: string;
  /** PAM_BROKER_TOKEN. */
  readonly token: string;
  readonly key: GatewayKeyPair;
  readonly targets: readonly string[];
  readonly signalling: Signalling;
  readonly log: (line: string) => void;
  /** Each (re-)registration, with how many there were before. */
  readonly onRegistered?: (count: number) => void;
  readonly pingIntervalMs?: number;
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
  const url = brokerSocketUrl(options.broker);
  const pingIntervalMs = options.pingIntervalMs ?? 10_000;
  let closed = false;
  let attempt = 0;
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
    const ws = new WebSocket(url, {
      headers: { authorization: `Bearer ${options.token}` },
      handshakeTimeout: 10_000,
      maxPayload: 256 * 1024,
      ...(options.ca ? { ca: options.ca } : {}),
    });
    current = ws;
    ws.on('unexpected-response', (_request, response) => {
      if (response.statusCode === 401) {
        options.log(`the broker ${options.broker} refused PAM_BROKER_TOKEN`);
        stop(
          new TunnelError('authRefused', `the broker ${options.broker} refused PAM_BROKER_TOKEN: set the broker's token on the gateway`),
        );
      } else {
        options.log(`the broker ${options.broker} answered HTTP ${response.statusCode} instead of a WebSocket: is it a pam broker?`);
      }
      ws.terminate();
    });
    ws.on('open', () => {
      const register: GatewayToBroker = {
        type: 'register',
        protocol: brokerProtocol,
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
        options.onRegistered?.(registrations);
        registrations += 1;
      } else if (message.type === 'refused') {
        options.log(`the broker refused site ${options.site}: ${message.reason}`);
        stop(new TunnelError('gatewayUnreachable', `the broker ${options.broker} refused site '${options.site}': ${message.reason}`));
      } else if (message.type === 'offer') {
        options.signalling.handle(Buffer.from(message.sealed, 'base64'), message.client, message.iceServers).then(
          (sealed) => answer(ws, { type: 'answer', id: message.id, sealed: sealed.toString('base64') }),
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
      if (attempt <= 1 || attempt % 10 === 0) options.log(`broker ${options.broker}: ${error.code ?? error.message}; retrying`);
    });
    ws.on('close', () => {
      if (closed) return;
      if (registrations > 0 && attempt === 0)
        options.log(`lost the broker ${options.broker}: re-registering (tunnels already up are not affected)`);
      retry = setTimeout(open, backoffMs(Math.max(attempt, 1)));
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
