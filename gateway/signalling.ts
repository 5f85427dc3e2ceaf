// The gateway's half of sealed signalling, whatever carries it (its own HTTP listener, or a broker's
// WebSocket): open the sealed request, refuse replays, check who asks (token or signed user key, see
// gateway/access.ts) and the offer, answer it with a WebRTC peer, and seal the answer back. The target
// is a name looked up in the allowlist, never an address, so clients cannot make the gateway dial
// elsewhere; only a SOCKS tunnel (target `@socks`, served with --socks-allow) names destinations, each
// decided by gateway/socks-policy.ts. Tunnels whose access is revoked (reload, expiry) are ended with the reason.

import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import { createReplayGuard, openRequest, SealError, type GatewayKeyPair } from '../adapters/sealed-signalling.js';
import { Mux, type MuxDestination, type MuxOptions } from '../adapters/mux.js';
import { socksTarget } from '../machines/start-flags.js';
import type { SocksPolicy } from './socks-policy.js';
import { dialSocks, dialTarget, refuseDestination } from './dial.js';
import type { IceOptions, IceServer } from '../adapters/ice-options.js';
import { bundleAnswers, weriftAnswerer, type AnswerOptions, type Answerer, type BundledAnswer } from './answerer.js';
import { AccessDenied, createAccess } from './access.js';
import type { AuthorizedKeys } from './authorized-keys.js';
import { describePrincipal, type AccessRefusal, type AccessRequest, type Principal, type RefusalCode } from './principal.js';
import { AuditUnavailable, noAudit, type AuditSink } from './audit.js';
import { tunnelAudit } from './tunnel-audit.js';
import { allOrNone } from '../adapters/all-or-none.js';

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
  /** Where refusals, tunnels and connections are recorded before they take effect (`pam gateway` always gives one). */
  readonly audit?: AuditSink;
}

/** What a sealed answer carries: the outcome of the request, readable only by the client. */
export interface SealedReply {
  readonly status: number;
  readonly answer?: string;
  /** Answers to `extraOffers`, in order: the tunnel's further parallel connections (decision 0016). */
  readonly extraAnswers?: readonly string[];
  /** This gateway holds a connection's data that comes before its target answered (MuxOptions.earlyData). */
  readonly earlyData?: boolean;
  /** The request's `negotiatedChannel`: every answer's peer made that channel itself (decision 0017). */
  readonly negotiatedChannel?: number;
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
    /** For the audit line: who the access check saw, and its refusal code. */
    readonly audit?: { readonly code: RefusalCode; readonly who?: Principal },
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
  /** Close every tunnel (recording tunnel.closed) and every peer connection. */
  closeAll(): Promise<void>;
}

/** A tunnel the gateway serves, with who opened it (for revocation). */
interface LiveTunnel {
  /** `targets`: every target of a link that serves several (`target` is the first). */
  readonly request: AccessRequest & { readonly principal: Principal; readonly targets?: readonly string[] };
  /** End it, telling the client why; set once the data channel is open. */
  end?: (reason: string) => void;
  readonly drop: (why: string) => Promise<void>;
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
   * Every access refusal goes through here: the log line, and the reply the client exits 77 with; its
   * code and principal ride on the Refusal to the audit line `handle()` records for every refusal.
   */
  function refuse(refusal: AccessRefusal): never {
    const { request, code, message } = refusal;
    options.log(`refused ${describePrincipal(request.principal)} from ${request.client} to '${request.target.slice(0, 64)}': ${code}`);
    const status = code === 'token-refused' || code === 'no-credentials' ? 401 : code === 'replayed' ? 400 : 403;
    throw new Refusal(status, message, undefined, { code, ...(request.principal ? { who: request.principal } : {}) });
  }

  function recheckAccess(): void {
    for (const tunnel of [...live]) {
      const { principal, target, client } = tunnel.request;
      // One target of several no longer granted ends the link: its streams share the others' channel.
      const revoked = (tunnel.request.targets ?? [target]).map((name) => access.revoked(principal, name, client)).find(Boolean);
      if (!revoked) continue;
      options.log(`tunnel to ${target} of ${describePrincipal(principal)} ended: ${revoked.code}`);
      live.delete(tunnel);
      if (tunnel.end) tunnel.end(revoked.message);
      else void tunnel.drop(revoked.message);
    }
  }
  const expiry = access.admitsKeys ? setInterval(recheckAccess, expiryCheckMs) : undefined;
  expiry?.unref();
  const audit = options.audit ?? noAudit;

  /** Every refusal, access or not, passes here: recorded (access.refused) before the client is answered. */
  async function recordRefusal(client: string, status: number, why: string, seen: RequestSeen): Promise<void> {
    await audit
      .record({
        event: 'access.refused',
        client,
        status,
        why,
        ...(seen.who ? { who: seen.who } : {}),
        ...(seen.target !== undefined ? { target: seen.target } : {}),
        ...(seen.code ? { code: seen.code } : {}),
      })
      .catch((error: unknown) => options.log(`refusal of ${client} (${why}) not recorded: ${(error as Error).message}`));
  }

  async function handle(envelope: Buffer, client: string, servers?: readonly IceServer[]): Promise<Buffer> {
    let opened: Awaited<ReturnType<typeof openRequest>>;
    try {
      opened = await openRequest(options.key, envelope);
    } catch (error) {
      if (error instanceof SealError) {
        await recordRefusal(client, 400, error.message, {});
        throw new ClearRefusal(400, error.message);
      }
      throw error;
    }
    let reply: SealedReply;
    const seen: RequestSeen = {};
    try {
      const { sdps, negotiatedChannel } = await openTunnel(opened.request, client, seen, servers);
      const [answer, ...extraAnswers] = sdps;
      reply = {
        status: 200,
        answer,
        ...(extraAnswers.length > 0 ? { extraAnswers } : {}),
        earlyData: true,
        ...(negotiatedChannel !== undefined ? { negotiatedChannel } : {}),
      };
    } catch (error) {
      if (!(error instanceof Refusal)) throw error;
      await recordRefusal(client, error.status, error.message, { ...seen, ...error.audit });
      reply = { status: error.status, error: error.message, ...(error.targets ? { targets: error.targets } : {}) };
    }
    return opened.seal(Buffer.from(JSON.stringify(reply)));
  }

  /** The answers to the request's offers (its first, then its `extraOffers`), or a Refusal. */
  async function openTunnel(
    plain: Buffer,
    client: string,
    seen: RequestSeen,
    servers?: readonly IceServer[],
  ): Promise<{ sdps: string[]; negotiatedChannel?: number }> {
    let parsed: unknown;
    try {
      parsed = JSON.parse(plain.toString('utf8'));
    } catch {
      throw new Refusal(400, 'sealed request is not JSON');
    }
    const fields = (parsed ?? {}) as Record<string, unknown>;
    const { target, targets, offer, extraOffers, answerSetup, negotiatedChannel, nonce, timestamp, reason, ticket } = fields;
    if (typeof target === 'string') seen.target = target.slice(0, 64);
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
    if (
      (reason !== undefined && (typeof reason !== 'string' || reason.length > 500)) ||
      (ticket !== undefined && (typeof ticket !== 'string' || ticket.length > 100))
    )
      throw new Refusal(400, 'reason and ticket, when given, must be strings (at most 500 and 100 characters)');
    const said = { ...(typeof reason === 'string' ? { reason } : {}), ...(typeof ticket === 'string' ? { ticket } : {}) };
    let principal: Principal;
    try {
      const statement = {
        gateway: options.key.fingerprint,
        target: typeof target === 'string' ? target : '',
        // Several targets are signed as a list; one target is signed as before.
        ...(Array.isArray(targets) && targets.length > 1 ? { targets } : {}),
        nonce,
        timestamp,
        offer: typeof offer === 'string' ? offer : '',
        ...(Array.isArray(extraOffers) && extraOffers.length > 0 ? { extraOffers: extraOffers.map(String) } : {}),
        ...said,
      };
      principal = access.authorize(fields, statement, client, held);
    } catch (error) {
      if (!(error instanceof AccessDenied)) throw error;
      const code: RefusalCode = error.code;
      refuse({
        request: {
          ...(error.principal ? { principal: error.principal } : {}),
          client,
          target: typeof target === 'string' ? target : '',
          ...said,
        },
        code,
        message: error.message,
      });
    }
    seen.who = principal;
    // Shape errors only after authentication: an unauthenticated request learns nothing of the protocol.
    if (typeof target !== 'string' || typeof offer !== 'string')
      throw new Refusal(400, 'request must carry {"target": string, "offer": string}');
    const requested = requestedTargets(target, targets);
    const request: LiveTunnel['request'] = { principal, client, target, ...(requested.length > 1 ? { targets: requested } : {}), ...said };
    if (answerSetup !== undefined && answerSetup !== 'passive') throw new Refusal(400, 'answerSetup, when given, must be "passive"');
    const isStreamId = (value: unknown): value is number => Number.isInteger(value) && (value as number) >= 0 && (value as number) <= 1023;
    if (negotiatedChannel !== undefined && !isStreamId(negotiatedChannel))
      throw new Refusal(400, 'negotiatedChannel, when given, must be a stream id from 0 to 1023');
    const socks = target === socksTarget ? options.socks : undefined;
    if (target === socksTarget && !socks) {
      options.log(`refused a SOCKS tunnel from ${client}: this gateway has no --socks-allow rule`);
      throw new Refusal(404, 'this gateway was started without --socks-allow', access.granted(principal, names));
    }
    if (socks && requested.length > 1) throw new Refusal(400, 'a SOCKS tunnel cannot be combined with named targets');
    // Several targets over one link: every name must be served, or none is opened; a key learns only
    // of the targets granted to it (and served here); the token, of every target.
    const unknown = socks ? undefined : requested.find((name) => !Object.hasOwn(options.targets, name));
    if (unknown !== undefined) throw new Refusal(404, `unknown target '${unknown.slice(0, 64)}'`, access.granted(principal, names));
    // authorize() checked a key's grant for the first target; each of the others needs it too.
    const ungranted = socks ? undefined : requested.find((name) => !access.granted(principal, names).includes(name));
    if (ungranted !== undefined) {
      refuse({
        request: { principal, client, target: ungranted, ...said },
        code: 'target-not-granted',
        message: `${describePrincipal(principal)} is not granted target '${ungranted.slice(0, 64)}'; it may reach: ${access.granted(principal, names).join(', ')}`,
      });
    }
    if (peers.size >= maxPeers) throw new Refusal(429, `gateway is serving its limit of ${maxPeers} tunnels`);
    if ((perClient.get(client) ?? 0) >= maxPeersPerClient) {
      throw new Refusal(429, `this client already holds ${maxPeersPerClient} tunnels, the per-client limit`);
    }
    const offers = [offer, ...parallelOffers(extraOffers)];
    for (const each of offers) checkOffer(each);
    // Fail closed: a tunnel the log could not record is not opened.
    await audit.ready().catch((error: unknown) => {
      throw error instanceof AuditUnavailable ? new Refusal(503, error.message) : error;
    });

    const label = socks ? `SOCKS tunnel of ${describePrincipal(principal)} from ${client}` : `tunnel to ${requested.join(', ')}`;
    const dial = (destination: MuxDestination | undefined, name?: string): Promise<Socket> => {
      if (socks) {
        if (!destination) return refuseDestination('no destination');
        // A key's socks="…" grant, as in force now, narrows --socks-allow for its tunnels.
        const grant = principal.kind === 'key' ? (options.authorizedKeys?.().grants.get(principal.fingerprint)?.socks ?? []) : undefined;
        return dialSocks(socks, destination, (line) => options.log(`${label}: ${line}`), grant);
      }
      // A named-target tunnel goes to its negotiated targets only (an unnamed open: the first), whatever an open frame asks for.
      const chosen = name ?? requested[0]!;
      if (destination || !requested.includes(chosen)) return refuseDestination('this tunnel carries its named targets only');
      return dialTarget(options.targets[chosen]!);
    };
    const slot = {};
    peers.add(slot);
    perClient.set(client, (perClient.get(client) ?? 0) + 1);
    let answer: BundledAnswer | undefined;
    let mux: Mux | undefined;
    const trail = tunnelAudit(audit, { tunnel: randomBytes(6).toString('hex'), who: principal, client, target, ...said }, options.log);
    const drop = (why: string): Promise<void> => {
      live.delete(tunnel);
      if (!peers.delete(slot)) return Promise.resolve();
      const held = (perClient.get(client) ?? 1) - 1;
      if (held > 0) perClient.set(client, held);
      else perClient.delete(client);
      // Ends the tunnel's connections now, so tunnel.closed carries their totals.
      void mux?.close(0);
      answer?.close();
      return trail.closed(why);
    };
    const tunnel: LiveTunnel = { request, drop };
    live.add(tunnel);
    // The whole answer (parse, answer, gather) is bounded: a request can never hang the client.
    const answering = AbortSignal.timeout(signallingTimeoutMs);
    const answerOptions = {
      passive: answerSetup === 'passive',
      ...(servers ? { servers } : {}),
      ...(negotiatedChannel !== undefined ? { negotiatedChannel } : {}),
    };
    const pending = answerAll(offers, answering, answerOptions);
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
      void drop('no answer');
      void pending.then(
        (late) => late.close(),
        () => undefined,
      );
      if (error instanceof Refusal) throw error;
      throw new Refusal(400, `offer refused: ${error instanceof Error ? error.message : String(error)}`.slice(0, 200));
    }
    const deadline = setTimeout(() => {
      options.log(`${label}: data channel not open after ${channelDeadlineMs / 1000} s, dropped`);
      void drop('data channel not open in time');
    }, channelDeadlineMs);
    deadline.unref();
    answer.onEnded(() => {
      clearTimeout(deadline);
      void drop('the peer connection ended');
    });
    const opened = answer;
    answer.channel.then(
      (frames) => {
        clearTimeout(deadline);
        const pair = opened.selectedPath?.();
        // Recorded before any connection is dialled: each connection.opened waits for this line.
        trail.opened(pair).catch((error: unknown) => {
          options.log(`${label} closed: ${(error as Error).message}`);
          void drop('the audit log could not be written');
        });
        mux = new Mux(frames, {
          ...options.mux,
          dial,
          log: (line) => options.log(`${label}: ${line}`),
          streams: trail.streams,
        });
        mux.onLost((reason) => {
          options.log(`${label} ended: ${reason}`);
          void drop(reason);
        });
        // Revoked: the goodbye frame carries the reason, then the peer goes.
        tunnel.end = (reason) => void mux?.close(500, { ending: 'revoked', reason }).finally(() => drop(reason));
        const over = offers.length > 1 ? `, ${offers.length} connections` : '';
        options.log(`${label} open${pair ? ` (path ${pair}${over})` : over ? ` (${over.slice(2)})` : ''}`);
      },
      () => void drop('the data channel did not open'),
    );
    return {
      sdps: answer.sdps,
      ...(answer.negotiated && negotiatedChannel !== undefined ? { negotiatedChannel } : {}),
    };
  }

  /** One answer per offer, bundled as one (closing those made if any fails). */
  async function answerAll(offers: readonly string[], signal: AbortSignal, answerOptions: AnswerOptions): Promise<BundledAnswer> {
    const answers = await allOrNone(
      offers.map((each) => answerer.answer(each, signal, answerOptions)),
      (made) => {
        for (const each of made) each.close();
      },
    );
    return bundleAnswers(answers);
  }

  return {
    handle,
    peerCount: () => peers.size,
    recheckAccess,
    async closeAll() {
      clearInterval(expiry);
      const closing = [...live].map((tunnel) => tunnel.drop('the gateway stopped'));
      live.clear();
      answerer.closeAll();
      peers.clear();
      await Promise.allSettled(closing);
    },
  };
}

/** At most this many connections per tunnel (the first offer and up to seven more). */
const maxParallel = 8;

/** `extraOffers`, when given: a list of up to seven SDP strings. */
function parallelOffers(extraOffers: unknown): string[] {
  if (extraOffers === undefined) return [];
  if (
    !Array.isArray(extraOffers) ||
    extraOffers.length === 0 ||
    extraOffers.length > maxParallel - 1 ||
    !extraOffers.every((each) => typeof each === 'string')
  )
    throw new Refusal(400, `extraOffers, when given, must be a list of 1 to ${maxParallel - 1} SDP offers`);
  return extraOffers as string[];
}

/** What a data-channel offer must carry; werift accepts less and then never answers. */
function checkOffer(offer: string): void {
  if (!/^v=0\r?\n/.test(offer)) throw new Refusal(400, 'offer is not an SDP');
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
}

/** What a request showed before it was refused, for its access.refused line. */
interface RequestSeen {
  who?: Principal;
  target?: string;
  code?: RefusalCode;
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
