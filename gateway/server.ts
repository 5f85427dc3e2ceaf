// `pam gateway`: authenticated HTTP signalling (offer in, answer out), a WebRTC answerer per tunnel,
// and a mux whose streams are dialled to allowlisted targets only. The target field of a request is a
// name looked up in the allowlist, never an address, so clients cannot make the gateway dial elsewhere.

import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { connect, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { BodyTooLarge, readBody } from '../adapters/http-body.js';
import { TunnelError } from '../machines/errors.js';
import { Mux, type MuxOptions } from '../adapters/mux.js';
import type { IceOptions } from '../adapters/ice-options.js';
import { isLoopback } from '../adapters/loopback.js';
import { weriftAnswerer, type Answer, type Answerer } from './answerer.js';

export interface GatewayTarget {
  readonly host: string;
  readonly port: number;
}

export interface GatewayOptions {
  readonly host: string;
  readonly port: number;
  readonly token: string;
  readonly targets: Readonly<Record<string, GatewayTarget>>;
  readonly log: (line: string) => void;
  readonly ice?: IceOptions;
  /** The WebRTC library answering offers (werift when none is given; `pam gateway` passes native). */
  readonly answerer?: Answerer;
  readonly mux?: MuxOptions;
  /** Largest signalling request body accepted. */
  readonly maxBodyBytes?: number;
  /** Peer connections served at once; more are refused with 429. */
  readonly maxPeers?: number;
  /** Peer connections one client address may hold at once; more are refused with 429. */
  readonly maxPeersPerClient?: number;
  /** PEM certificate and key: serve signalling over HTTPS. */
  readonly tls?: { readonly cert: string; readonly key: string };
  /** Longest time to produce an answer; then 504 and the peer is dropped. */
  readonly signallingTimeoutMs?: number;
  /** A peer whose data channel is not open by then is dropped. */
  readonly channelDeadlineMs?: number;
}

export interface Gateway {
  readonly url: string;
  readonly port: number;
  peerCount(): number;
  close(): Promise<void>;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly extra: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

const digest = (text: string) => createHash('sha256').update(text).digest();

export async function startGateway(options: GatewayOptions): Promise<Gateway> {
  const maxBodyBytes = options.maxBodyBytes ?? 64 * 1024;
  const maxPeers = options.maxPeers ?? 256;
  const maxPeersPerClient = options.maxPeersPerClient ?? 64;
  const perClient = new Map<string, number>();
  const channelDeadlineMs = options.channelDeadlineMs ?? 30_000;
  const signallingTimeoutMs = options.signallingTimeoutMs ?? 10_000;
  const tokenDigest = digest(options.token);
  const peers = new Set<object>();
  const answerer = options.answerer ?? weriftAnswerer(options.ice);
  const names = Object.keys(options.targets);
  let signallingRequests = 0;

  const authorized = (request: IncomingMessage) => {
    const header = request.headers.authorization ?? '';
    const presented = header.startsWith('Bearer ') ? header.slice('Bearer '.length) : '';
    return timingSafeEqual(digest(presented), tokenDigest) && presented.length > 0;
  };

  async function openTunnel(request: IncomingMessage): Promise<string> {
    if (!authorized(request)) throw new HttpError(401, 'token refused');
    const body = await readBody(request, maxBodyBytes).catch((error: unknown) => {
      throw error instanceof BodyTooLarge ? new HttpError(413, error.message) : error;
    });
    let parsed: unknown;
    try {
      parsed = JSON.parse(body);
    } catch {
      throw new HttpError(400, 'body is not JSON');
    }
    const { target, offer, answerSetup } = (parsed ?? {}) as { target?: unknown; offer?: unknown; answerSetup?: unknown };
    if (typeof target !== 'string' || typeof offer !== 'string') throw new HttpError(400, 'body must be {"target": string, "offer": string}');
    if (answerSetup !== undefined && answerSetup !== 'passive') throw new HttpError(400, 'answerSetup, when given, must be "passive"');
    if (!Object.hasOwn(options.targets, target)) throw new HttpError(404, `unknown target '${target.slice(0, 64)}'`, { targets: names });
    if (peers.size >= maxPeers) throw new HttpError(429, `gateway is serving its limit of ${maxPeers} tunnels`);
    const client = request.socket.remoteAddress ?? 'unknown';
    if ((perClient.get(client) ?? 0) >= maxPeersPerClient) {
      throw new HttpError(429, `this client already holds ${maxPeersPerClient} tunnels, the per-client limit`);
    }
    if (!/^v=0\r?\n/.test(offer)) throw new HttpError(400, 'offer is not an SDP');
    // What a data-channel offer must carry; werift accepts less and then never answers.
    const required: Array<[string, RegExp]> = [
      ['m=application', /^m=application \d+ [A-Z/]*DTLS\/SCTP /m],
      ['a=ice-ufrag', /^a=ice-ufrag:\S+/m],
      ['a=ice-pwd', /^a=ice-pwd:\S+/m],
      ['a=fingerprint', /^a=fingerprint:\S+ [0-9A-Fa-f:]+/m],
      ['a=setup', /^a=setup:(actpass|active|passive)/m],
    ];
    for (const [line, pattern] of required) {
      if (!pattern.test(offer)) throw new HttpError(400, `offer lacks ${line}: not a WebRTC data-channel offer`);
    }

    const destination = options.targets[target]!;
    const slot = {};
    peers.add(slot);
    perClient.set(client, (perClient.get(client) ?? 0) + 1);
    let answer: Answer | undefined;
    const drop = () => {
      if (!peers.delete(slot)) return;
      const held = (perClient.get(client) ?? 1) - 1;
      if (held > 0) perClient.set(client, held);
      else perClient.delete(client);
      answer?.close();
    };
    // The whole answer (parse, answer, gather) is bounded: a request can never hang the client.
    const answering = AbortSignal.timeout(signallingTimeoutMs);
    const pending = answerer.answer(offer, answering, { passive: answerSetup === 'passive' });
    try {
      answer = await Promise.race([
        pending,
        new Promise<never>((_, reject) => answering.addEventListener('abort', () => reject(new HttpError(504, `no answer within ${signallingTimeoutMs / 1000} s`)), { once: true })),
      ]);
    } catch (error) {
      drop();
      void pending.then((late) => late.close(), () => undefined);
      if (error instanceof HttpError) throw error;
      throw new HttpError(400, `offer refused: ${error instanceof Error ? error.message : String(error)}`.slice(0, 200));
    }
    const deadline = setTimeout(() => {
      options.log(`tunnel to ${target}: data channel not open after ${channelDeadlineMs / 1000} s, dropped`);
      drop();
    }, channelDeadlineMs);
    deadline.unref();
    answer.onEnded(() => {
      clearTimeout(deadline);
      drop();
    });
    answer.channel.then(
      (frames) => {
        clearTimeout(deadline);
        const mux = new Mux(frames, {
          ...options.mux,
          dial: () => dialTarget(destination),
          log: (line) => options.log(`tunnel to ${target}: ${line}`),
        });
        mux.onLost((reason) => {
          options.log(`tunnel to ${target} ended: ${reason}`);
          drop();
        });
        options.log(`tunnel to ${target} open`);
      },
      () => drop(),
    );
    return answer.sdp;
  }

  const handler = (request: IncomingMessage, response: ServerResponse) => {
    route(request)
      .then((body) => reply(response, 200, body))
      .catch((error: unknown) => {
        if (error instanceof HttpError) reply(response, error.status, { error: error.message, ...error.extra });
        else {
          options.log(`internal error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
          reply(response, 500, { error: 'internal error' });
        }
      });
  };
  const server = options.tls ? httpsServer(options.tls, handler) : createServer(handler);
  // Slow or stalled clients cannot hold signalling sockets open.
  server.headersTimeout = 10_000;
  server.requestTimeout = 15_000;
  server.keepAliveTimeout = 5_000;

  async function route(request: IncomingMessage): Promise<unknown> {
    const path = (request.url ?? '').split('?')[0];
    if (path === '/healthz' && request.method === 'GET') return { ok: true, peers: peers.size, signallingRequests };
    if (path === '/v1/tunnels') {
      signallingRequests += 1;
      if (request.method !== 'POST') throw new HttpError(405, 'use POST');
      return { answer: await openTunnel(request) };
    }
    throw new HttpError(404, 'not found');
  }

  const hostPart = options.host.includes(':') ? `[${options.host}]` : options.host;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) => reject(listenError(error, `${hostPart}:${options.port}`)));
    server.listen({ host: options.host, port: options.port }, () => resolve());
  });
  const { port } = server.address() as AddressInfo;

  return {
    url: `${options.tls ? 'https' : 'http'}://${hostPart}:${port}`,
    port,
    peerCount: () => peers.size,
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      answerer.closeAll();
      peers.clear();
      await closed;
    },
  };
}

/** A certificate and key that do not load (not PEM, not a pair) are the operator's to fix, not a crash. */
function httpsServer(tls: { readonly cert: string; readonly key: string }, handler: (request: IncomingMessage, response: ServerResponse) => void) {
  try {
    return createHttpsServer({ cert: tls.cert, key: tls.key }, handler);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new TunnelError('usage', `--tls-cert/--tls-key cannot be used (${reason}): give a PEM certificate and its matching private key`);
  }
}

/** Why the signalling address cannot be bound, as an error the operator can act on. */
function listenError(error: NodeJS.ErrnoException, address: string): Error {
  if (error.code === 'EADDRINUSE') return new TunnelError('portBusy', `--listen ${address} is already in use: stop what holds it, or pick another port (port 0 picks a free one)`);
  if (error.code === 'EACCES') return new TunnelError('portBusy', `not allowed to listen on ${address}: ports below 1024 need privileges; pick another --listen port`);
  if (error.code === 'EADDRNOTAVAIL' || error.code === 'ENOTFOUND' || error.code === 'EAI_AGAIN') {
    return new TunnelError('usage', `--listen ${address}: that address is not one of this machine's (${error.code})`);
  }
  return error;
}

/** A warning for a gateway reachable from the network without TLS, or undefined. */
export function listenWarning(host: string, tls: boolean): string | undefined {
  if (isLoopback(host) || tls) return undefined;
  return `listening on ${host} without TLS: tokens and SDP would cross the network in clear; pass --tls-cert and --tls-key`;
}

function reply(response: ServerResponse, status: number, body: unknown): void {
  if (response.headersSent) return;
  const text = JSON.stringify(body);
  response.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...(status === 413 ? { connection: 'close' } : {}) });
  response.end(text);
}

function dialTarget(target: GatewayTarget): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: target.host, port: target.port, allowHalfOpen: true });
    socket.once('connect', () => {
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', (error: NodeJS.ErrnoException) => reject(new Error(`target ${target.host}:${target.port}: ${error.code ?? error.message}`)));
  });
}
