// The gateway's half of sealed signalling, whatever carries it (its own HTTP listener, or a broker's
// WebSocket): open the sealed request, refuse replays, check who asks (token or signed user key, see
// gateway/access.ts) and the offer, answer it with a WebRTC peer, and seal the answer back. The target
// is a name looked up in the allowlist, never an address, so clients cannot make the gateway dial
// elsewhere; only a SOCKS tunnel (target `@socks`, served with --socks-allow) names destinations, each
// decided by gateway/socks-policy.ts. Tunnels whose access is revoked (reload, expiry) are ended with the reason.

import type { Socket } from 'node:net';
import { createReplayGuard, openRequest, SealError, type GatewayKeyPair } from '../adapters/sealed-signalling.js';
import { Mux, type MuxDestination, type MuxOptions } from '../adapters/mux.js';
import { socksTarget } from '../machines/start-flags.js';
import type { SocksPolicy } from './socks-policy.js';
import { dialSocks, dialTarget, refuseDestination } from './dial.js';
import type { IceOptions, IceServer } from '../adapters/ice-options.js';
import { weriftAnswerer, type Answer, type Answerer } from './answerer.js';
import { AccessDenied, createAccess } from './access.js';
import type { AuthorizedKeys } from './authorized-keys.js';
import { describePrincipal, type AccessRefusal, type AccessRequest, type Principal, type RefusalCode } from './principal.js';

export interface GatewayTarget {
  readonly host: string;
  readonly port: number;
}

export interface SignallingOptions {
  /** The shared token (simple mode: every target); absent when only user keys are admitted. */
  readonly token?: string;
  /** The user keys and their grants in force now (`--authorized-keys`). */
  readonly authorizedKeys?: () => AuthorizedKeys;
  /** `--require-reason`: refuse a tunnel without --reason. */
  readonly requireReason?: boolean;
  readonly key: GatewayKeyPair;
  readonly targets: Readonly<Record<string, GatewayTarget>>;
  /** --socks-allow: SOCKS tunnels are served, each CONNECT decided by this policy; without it they are refused. */
  readonly socks?: SocksPolicy;
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
  /** Check every live tunnel against the grants in force now; end those no longer allowed. */
  recheckAccess(): void;
  closeAll(): void;
}

/** A tunnel the gateway serves, with who opened it (for revocation). */
interface LiveTunnel {
  readonly request: AccessRequest & { readonly principal: Principal };
  /** End it, telling the client why; set once the data channel is open. */
  end?: (reason: string) => void;
  readonly drop: () => void;
}

/** How often expiry is checked: a key whose `expires` passes loses its tunnels within a second. */
const expiryCheckMs = 250;

export function createSignalling(options: SignallingOptions): Signalling {
  const maxPeers = options.maxPeers ?? 256;
  const maxPeersPerClient = options.maxPeersPerClient ?? 64;
  const perClient = new Map<string, number>();
  const channelDeadlineMs = options.channelDeadlineMs ?? 30_000;
  const signallingTimeoutMs = options.signallingTimeoutMs ?? 10_000;
  const access = createAccess({
    ...(options.token !== undefined ? { token: options.token } : {}),
    ...(options.authorizedKeys ? { keys: options.authorizedKeys } : {}),
    ...(options.requireReason ? { requireReason: true } : {}),
  });
  const live = new Set<LiveTunnel>();
  const peers = new Set<object>();
  const answerer = options.answerer ?? weriftAnswerer(options.ice);
  const names = Object.keys(options.targets);
  const replay = createReplayGuard(options.replayWindowMs !== undefined ? { windowMs: options.replayWindowMs } : {});
  const held = (fingerprint: string) =>
    [...live].filter(({ request }) => request.principal.kind === 'key' && request.principal.fingerprint === fingerprint).length;

  /**
   * Every access refusal goes through here: the log line, and the reply the client exits 77 with.
   * (The one place to record `access.refused`.)
   */
  function refuse(refusal: AccessRefusal): never {
    const { request, code, message } = refusal;
    options.log(`refused ${describePrincipal(request.principal)} from ${request.client} to '${request.target.slice(0, 64)}': ${code}`);
    throw new Refusal(code === 'token-refused' || code === 'no-credentials' ? 401 : code === 'replayed' ? 400 : 403, message);
  }

  function recheckAccess(): void {
    for (const tunnel of [...live]) {
      const { principal, target, client } = tunnel.request;
      const revoked = access.revoked(principal, target, client);
      if (!revoked) continue;
      options.log(`tunnel to ${target} of ${describePrincipal(principal)} ended: ${revoked.code}`);
      live.delete(tunnel);
      if (tunnel.end) tunnel.end(revoked.message);
      else tunnel.drop();
    }
  }
  const expiry = access.admitsKeys ? setInterval(recheckAccess, expiryCheckMs) : undefined;
  expiry?.unref();

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
    const fields = (parsed ?? {}) as Record<string, unknown>;
    const { target, offer, answerSetup, nonce, timestamp, reason, ticket } = fields;
    if (typeof nonce !== 'string' || nonce.length < 16 || nonce.length > 64 || typeof timestamp !== 'number') {
      throw new Refusal(400, 'sealed request lacks a nonce and timestamp');
    }
    const replayed = replay.check(nonce, timestamp);
    if (replayed) {
      options.log(`refused a sealed request from ${client}: ${replayed}`);
      refuse({
        request: { client, target: typeof target === 'string' ? target : '' },
        code: 'replayed',
        message: `request refused: ${replayed}`,
      });
    }
    if (typeof target !== 'string' || typeof offer !== 'string')
      throw new Refusal(400, 'request must carry {"target": string, "offer": string}');
    if (
      (reason !== undefined && (typeof reason !== 'string' || reason.length > 500)) ||
      (ticket !== undefined && (typeof ticket !== 'string' || ticket.length > 100))
    )
      throw new Refusal(400, 'reason and ticket, when given, must be strings (at most 500 and 100 characters)');
    const said = { ...(typeof reason === 'string' ? { reason } : {}), ...(typeof ticket === 'string' ? { ticket } : {}) };
    let principal: Principal;
    try {
      const statement = { gateway: options.key.fingerprint, target, nonce, timestamp, offer, ...said };
      principal = access.authorize(fields, statement, client, held);
    } catch (error) {
      if (!(error instanceof AccessDenied)) throw error;
      const code: RefusalCode = error.code;
      refuse({
        request: { ...(error.principal ? { principal: error.principal } : {}), client, target, ...said },
        code,
        message: error.message,
      });
    }
    const request: LiveTunnel['request'] = { principal, client, target, ...said };
    if (answerSetup !== undefined && answerSetup !== 'passive') throw new Refusal(400, 'answerSetup, when given, must be "passive"');
    const socks = target === socksTarget ? options.socks : undefined;
    if (target === socksTarget && !socks) {
      options.log(`refused a SOCKS tunnel from ${client}: this gateway has no --socks-allow rule`);
      throw new Refusal(404, 'this gateway was started without --socks-allow', access.granted(principal, names));
    }
    // A key learns only of the targets granted to it (and served here); the token, of every target.
    if (!socks && !Object.hasOwn(options.targets, target))
      throw new Refusal(404, `unknown target '${target.slice(0, 64)}'`, access.granted(principal, names));
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

    const named = socks ? undefined : options.targets[target]!;
    const label = socks ? `SOCKS tunnel of ${describePrincipal(principal)} from ${client}` : `tunnel to ${target}`;
    const dial = (destination: MuxDestination | undefined): Promise<Socket> => {
      if (socks) {
        if (!destination) return refuseDestination('no destination');
        // A key's socks="…" grant, as in force now, narrows --socks-allow for its tunnels.
        const grant = principal.kind === 'key' ? (options.authorizedKeys?.().grants.get(principal.fingerprint)?.socks ?? []) : undefined;
        return dialSocks(socks, destination, (line) => options.log(`${label}: ${line}`), grant);
      }
      // A named-target tunnel goes to its target only, whatever an open frame asks for.
      return named && !destination ? dialTarget(named) : refuseDestination('this tunnel carries its named target only');
    };
    const slot = {};
    peers.add(slot);
    perClient.set(client, (perClient.get(client) ?? 0) + 1);
    let answer: Answer | undefined;
    const drop = () => {
      live.delete(tunnel);
      if (!peers.delete(slot)) return;
      const held = (perClient.get(client) ?? 1) - 1;
      if (held > 0) perClient.set(client, held);
      else perClient.delete(client);
      answer?.close();
    };
    const tunnel: LiveTunnel = { request, drop };
    live.add(tunnel);
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
      options.log(`${label}: data channel not open after ${channelDeadlineMs / 1000} s, dropped`);
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
          dial,
          log: (line) => options.log(`${label}: ${line}`),
        });
        mux.onLost((reason) => {
          options.log(`${label} ended: ${reason}`);
          drop();
        });
        // Revoked: the goodbye frame carries the reason, then the peer goes.
        tunnel.end = (reason) => void mux.close(500, { ending: 'revoked', reason }).finally(drop);
        const pair = opened.selectedPath?.();
        options.log(`${label} open${pair ? ` (path ${pair})` : ''}`);
      },
      () => drop(),
    );
    return answer.sdp;
  }

  return {
    handle,
    peerCount: () => peers.size,
    recheckAccess,
    closeAll() {
      clearInterval(expiry);
      live.clear();
      answerer.closeAll();
      peers.clear();
    },
  };
}
