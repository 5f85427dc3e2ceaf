// The gateway's half of sealed signalling, whatever carries it (its own HTTP listener, or a broker's
// WebSocket): open the sealed request, refuse replays, check the token and the offer, answer it with a
// WebRTC peer, and seal the answer back. The target is a name looked up in the allowlist, never an
// address, so clients cannot make the gateway dial elsewhere.

import { createHash, timingSafeEqual } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { createReplayGuard, openRequest, SealError, type GatewayKeyPair } from '../adapters/sealed-signalling.js';
import { Mux, type MuxOptions } from '../adapters/mux.js';
import type { IceOptions, IceServer } from '../adapters/ice-options.js';
import { weriftAnswerer, type Answer, type Answerer } from './answerer.js';

export interface GatewayTarget {
  readonly host: string;
  readonly port: number;
}

export interface SignallingOptions {
  readonly token: string;
  readonly key: GatewayKeyPair;
  readonly targets: Readonly<Record<string, GatewayTarget>>;
  readonly log: (line: string) => void;
  readonly ice?: IceOptions;
  /** The WebRTC library answering offers (werift when none is given; `pam gateway` passes native). */
  readonly answerer?: Answerer;
  readonly mux?: MuxOptions;
  /** Peer connections served at once; more are refused with 429. */
  readonly maxPeers?: number;
  /** Peer connections one client address may hold at once; more are refused with 429. */
  readonly maxPeersPerClient?: number;
  /** Longest time to produce an answer; then 504 and the peer is dropped. */
  readonly signallingTimeoutMs?: number;
  /** A peer whose data channel is not open by then is dropped. */
  readonly channelDeadlineMs?: number;
  /** How far a request's timestamp may be from this clock (replay window). */
  readonly replayWindowMs?: number;
}

/** What a sealed answer carries: the outcome of the request, readable only by the client. */
export interface SealedReply {
  readonly status: number;
  readonly answer?: string;
  readonly error?: string;
  readonly targets?: readonly string[];
}

/** A refusal sent in clear: the request could not be opened, so there is no context to seal under. */
export class ClearRefusal extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

class Refusal extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly targets?: readonly string[],
  ) {
    super(message);
  }
}

export interface Signalling {
  /** Sealed request → sealed reply; throws ClearRefusal when the request cannot be opened. */
  handle(envelope: Buffer, client: string, servers?: readonly IceServer[]): Promise<Buffer>;
  peerCount(): number;
  closeAll(): void;
}

const digest = (text: string) => createHash('sha256').update(text).digest();

export function createSignalling(options: SignallingOptions): Signalling {
  const maxPeers = options.maxPeers ?? 256;
  const maxPeersPerClient = options.maxPeersPerClient ?? 64;
  const perClient = new Map<string, number>();
  const channelDeadlineMs = options.channelDeadlineMs ?? 30_000;
  const signallingTimeoutMs = options.signallingTimeoutMs ?? 10_000;
  const tokenDigest = digest(options.token);
  const peers = new Set<object>();
  const answerer = options.answerer ?? weriftAnswerer(options.ice);
  const names = Object.keys(options.targets);
  const replay = createReplayGuard(options.replayWindowMs !== undefined ? { windowMs: options.replayWindowMs } : {});

  async function handle(envelope: Buffer, client: string, servers?: readonly IceServer[]): Promise<Buffer> {
    let opened: Awaited<ReturnType<typeof openRequest>>;
    try {
      opened = await openRequest(options.key, envelope);
    } catch (error) {
      if (error instanceof SealError) throw new ClearRefusal(400, error.message);
      throw error;
    }
    let reply: SealedReply;
    try {
      reply = { status: 200, answer: await openTunnel(opened.request, client, servers) };
    } catch (error) {
      if (!(error instanceof Refusal)) throw error;
      reply = { status: error.status, error: error.message, ...(error.targets ? { targets: error.targets } : {}) };
    }
    return opened.seal(Buffer.from(JSON.stringify(reply)));
  }

  async function openTunnel(plain: Buffer, client: string, servers?: readonly IceServer[]): Promise<string> {
    let parsed: unknown;
    try {
      parsed = JSON.parse(plain.toString('utf8'));
    } catch {
      throw new Refusal(400, 'sealed request is not JSON');
    }
    const { target, targets, offer, answerSetup, token, nonce, timestamp } = (parsed ?? {}) as Record<string, unknown>;
    if (typeof nonce !== 'string' || nonce.length < 16 || nonce.length > 64 || typeof timestamp !== 'number') {
      throw new Refusal(400, 'sealed request lacks a nonce and timestamp');
    }
    const replayed = replay.check(nonce, timestamp);
    if (replayed) {
      options.log(`refused a sealed request from ${client}: ${replayed}`);
      throw new Refusal(400, `request refused: ${replayed}`);
    }
    const presented = typeof token === 'string' ? token : '';
    if (!(timingSafeEqual(digest(presented), tokenDigest) && presented.length > 0)) throw new Refusal(401, 'token refused');
    if (typeof target !== 'string' || typeof offer !== 'string')
      throw new Refusal(400, 'request must carry {"target": string, "offer": string}');
    if (answerSetup !== undefined && answerSetup !== 'passive') throw new Refusal(400, 'answerSetup, when given, must be "passive"');
    // Several targets over one link: every name must be served, or none is opened.
    const requested = requestedTargets(target, targets);
    const unknown = requested.find((name) => !Object.hasOwn(options.targets, name));
    if (unknown !== undefined) throw new Refusal(404, `unknown target '${unknown.slice(0, 64)}'`, names);
    if (peers.size >= maxPeers) throw new Refusal(429, `gateway is serving its limit of ${maxPeers} tunnels`);
    if ((perClient.get(client) ?? 0) >= maxPeersPerClient) {
      throw new Refusal(429, `this client already holds ${maxPeersPerClient} tunnels, the per-client limit`);
    }
    if (!/^v=0\r?\n/.test(offer)) throw new Refusal(400, 'offer is not an SDP');
    // What a data-channel offer must carry; werift accepts less and then never answers.
    const required: Array<[string, RegExp]> = [
      ['m=application', /^m=application \d+ [A-Z/]*DTLS\/SCTP /m],
      ['a=ice-ufrag', /^a=ice-ufrag:\S+/m],
      ['a=ice-pwd', /^a=ice-pwd:\S+/m],
      ['a=fingerprint', /^a=fingerprint:\S+ [0-9A-Fa-f:]+/m],
      ['a=setup', /^a=setup:(actpass|active|passive)/m],
    ];
    for (const [line, pattern] of required) {
      if (!pattern.test(offer)) throw new Refusal(400, `offer lacks ${line}: not a WebRTC data-channel offer`);
    }

    const label = requested.join(', ');
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
    const pending = answerer.answer(offer, answering, { passive: answerSetup === 'passive', ...(servers ? { servers } : {}) });
    try {
      answer = await Promise.race([
        pending,
        new Promise<never>((_, reject) =>
          answering.addEventListener('abort', () => reject(new Refusal(504, `no answer within ${signallingTimeoutMs / 1000} s`)), {
            once: true,
          }),
        ),
      ]);
    } catch (error) {
      drop();
      void pending.then(
        (late) => late.close(),
        () => undefined,
      );
      if (error instanceof Refusal) throw error;
      throw new Refusal(400, `offer refused: ${error instanceof Error ? error.message : String(error)}`.slice(0, 200));
    }
    const deadline = setTimeout(() => {
      options.log(`tunnel to ${label}: data channel not open after ${channelDeadlineMs / 1000} s, dropped`);
      drop();
    }, channelDeadlineMs);
    deadline.unref();
    answer.onEnded(() => {
      clearTimeout(deadline);
      drop();
    });
    const opened = answer;
    answer.channel.then(
      (frames) => {
        clearTimeout(deadline);
        const mux = new Mux(frames, {
          ...options.mux,
          // An open frame names its target ('' from a client with one); only the negotiated ones are dialled.
          dial: (name) => {
            const chosen = name === '' ? requested[0]! : name;
            if (!requested.includes(chosen)) return Promise.reject(new Error(`target '${chosen.slice(0, 64)}' is not part of this tunnel`));
            return dialTarget(options.targets[chosen]!);
          },
          log: (line) => options.log(`tunnel to ${label}: ${line}`),
        });
        mux.onLost((reason) => {
          options.log(`tunnel to ${label} ended: ${reason}`);
          drop();
        });
        const pair = opened.selectedPath?.();
        options.log(`tunnel to ${label} open${pair ? ` (path ${pair})` : ''}`);
      },
      () => drop(),
    );
    return answer.sdp;
  }

  return {
    handle,
    peerCount: () => peers.size,
    closeAll() {
      answerer.closeAll();
      peers.clear();
    },
  };
}

/** The targets a request names: `targets` (a list of distinct names) when given, else `target` alone. */
function requestedTargets(target: string, targets: unknown): string[] {
  if (targets === undefined) return [target];
  if (!Array.isArray(targets) || targets.length === 0 || targets.length > 32 || !targets.every((name) => typeof name === 'string'))
    throw new Refusal(400, 'targets, when given, must be a list of 1 to 32 target names');
  if (new Set(targets).size !== targets.length || targets[0] !== target)
    throw new Refusal(400, 'targets must be distinct and start with target');
  return targets as string[];
}

function dialTarget(target: GatewayTarget): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: target.host, port: target.port, allowHalfOpen: true });
    socket.once('connect', () => {
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', (error: NodeJS.ErrnoException) =>
      reject(new Error(`target ${target.host}:${target.port}: ${error.code ?? error.message}`)),
    );
  });
}
