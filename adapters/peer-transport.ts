// The client transport, independent of the WebRTC library: sealed HTTP signalling with the gateway,
// directly or through a broker (fetch and check the gateway's key, then offer → answer sealed to it,
// token inside the seal), then a data channel carrying the mux; a wedged ICE/DTLS attempt is retried
// with a fresh peer connection within the caller's deadline. A gateway setting listing several URLs of
// one site is tried in order, the next when one does not answer. werift and node-datachannel plug in
// as a PeerKind (adapters/werift-transport.ts, adapters/native-transport.ts).

import { randomBytes } from 'node:crypto';
import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { Socket } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { TunnelError } from '../machines/errors.js';
import { gatewayUrls } from '../machines/start-flags.js';
import type { Link, LinkPath, NegotiateRequest, Negotiation, Transport } from '../machines/ports.js';
import { BodyTooLarge, readBodyBytes } from './http-body.js';
import type { GatewayKeyCheck } from './known-gateways.js';
import { SealError, sealedContentType, sealRequest } from './sealed-signalling.js';
import { keyFingerprint } from './key-fingerprint.js';
import { signStatement, type Credentials } from './user-key.js';
import type { IceServer } from './ice-options.js';
import { Mux, type FrameChannel, type MuxOptions } from './mux.js';
import { stripedFrames } from './striped-channel.js';
import { allOrNone } from './all-or-none.js';
import { socksTarget } from '../machines/start-flags.js';
import { serveSocks } from './socks5-server.js';

/** One WebRTC library's offerer side. `P` is its peer handle. */
export interface PeerKind<P> {
  /** A peer with a data channel, its offer gathered (non-trickle); `servers` add to the configured ICE servers. */
  offer(signal: AbortSignal, servers?: readonly IceServer[]): Promise<{ peer: P; sdp: string }>;
  /** Apply the answer; `negotiated`: the gateway made the `negotiatedChannel` channel (else open one with DCEP). */
  accept(peer: P, answer: string, options: { negotiated: boolean }): Promise<void>;
  /** Resolve with the channel once open; reject with a readable reason if the connection fails. */
  open(peer: P, signal: AbortSignal): Promise<FrameChannel>;
  close(peer: P): Promise<void>;
  /** The selected candidate pair once connected, if the library exposes it. */
  selectedPath?(peer: P): LinkPath | undefined;
  /**
   * Ask the gateway to answer `a=setup:passive`, so this offerer is the DTLS client. libdatachannel
   * asks; werift does not (as DTLS client it fails against libdatachannel's OpenSSL server).
   */
  readonly answerSetup?: 'passive';
  /**
   * The offer's data channel is a pre-negotiated one with this stream id: ask the gateway to make it
   * too, which saves DCEP's OPEN → ACK round trip (decision 0017). A gateway that does not say it did
   * gets a DCEP channel instead (accept's `negotiated: false`).
   */
  readonly negotiatedChannel?: number;
}

export interface PeerTransportOptions extends Credentials {
  readonly mux?: MuxOptions;
  /**
   * Peer connections (SCTP associations) one tunnel spreads its frames over (1–8, default 1): each has
   * its own windows, so several carry more per round trip on a long path (decision 0016). A gateway
   * that answers fewer offers than sent gets that many.
   */
  readonly parallel?: number;
  /** Pinning / known_gateways; without one any key is accepted (in-process tests). */
  readonly keys?: GatewayKeyCheck;
}

class PeerNegotiation<P> implements Negotiation {
  constructor(
    readonly kind: PeerKind<P>,
    /** The first carries the path shown to the user; all of them carry frames. */
    readonly peers: readonly P[],
    readonly request: Omit<NegotiateRequest, 'signal'>,
    /** The gateway holds a connection's data that arrives before its target answered (MuxOptions.earlyData). */
    readonly earlyData = false,
  ) {}

  close(): Promise<void> {
    return closePeers(this.kind, this.peers);
  }
}

async function closePeers<P>(kind: PeerKind<P>, peers: readonly P[]): Promise<void> {
  await Promise.all(peers.map((peer) => kind.close(peer)));
}

/**
 * How long one ICE/DTLS attempt may take before a fresh peer connection is tried. werift's DTLS
 * handshake can wedge when a ClientHello is retransmitted before the other side listens (seen with
 * 20 tunnels starting at once on 2 cores); a new attempt succeeds, so attempts retry within --timeout.
 */
const attemptWindowMs = (attempt: number) => Math.min(5_000 * 1.5 ** (attempt - 1), 20_000);
/** Before retry n + 1: none after the first failure, then 250 ms doubling to 2 s. */
const retryPauseMs = (attempt: number) => (attempt <= 1 ? 0 : Math.min(125 * 2 ** (attempt - 1), 2_000));

/** How long a URL of a list may take to show its key before the next one is asked. */
const keyDeadlineMs = 5_000;

export function createPeerTransport<P>(kind: PeerKind<P>, options: PeerTransportOptions): Transport<Socket> {
  // The URL of the list that answered last: a reconnect asks it first, so a dead broker costs one try.
  let answered = 0;
  const parallel = options.parallel ?? 1;

  /** `parallel` peers with their offers; none left open if one fails. */
  function offerAll(servers: readonly IceServer[], signal: AbortSignal): Promise<Array<{ peer: P; sdp: string }>> {
    const offers = Array.from({ length: parallel }, () => kind.offer(signal, servers));
    return allOrNone(offers, (made) =>
      closePeers(
        kind,
        made.map((offer) => offer.peer),
      ),
    );
  }

  async function negotiateOnce(request: Omit<NegotiateRequest, 'signal'>, signal: AbortSignal): Promise<PeerNegotiation<P>> {
    const urls = gatewayUrls(request.gateway);
    if (urls.length <= 1) return negotiateAt(urls[0] ?? request.gateway, request, signal);
    const failures: string[] = [];
    for (let step = 0; step < urls.length; step += 1) {
      const index = (answered + step) % urls.length;
      try {
        const negotiation = await negotiateAt(urls[index]!, request, signal);
        answered = index;
        return negotiation;
      } catch (error) {
        if (!(error instanceof Unanswered) || signal.aborted) throw error;
        failures.push(error.reason);
      }
    }
    throw new TunnelError(
      'gatewayUnreachable',
      `no URL of ${request.gateway} answered (${failures.join('; ')}); check --gateway / PAM_GATEWAY_URL and that a broker or gateway of the site runs`,
    );
  }

  /** One URL of the site; `request.gateway` (the whole list) is what the key is checked against. */
  async function negotiateAt(url: string, request: Omit<NegotiateRequest, 'signal'>, signal: AbortSignal): Promise<PeerNegotiation<P>> {
    const setup = {
      ...(kind.answerSetup ? { answerSetup: kind.answerSetup } : {}),
      ...(kind.negotiatedChannel !== undefined ? { negotiatedChannel: kind.negotiatedChannel } : {}),
    };
    // The key request and the offer share one kept-alive connection: one TCP (and TLS) handshake
    // fewer per connect, a round trip each on a long path.
    const connection = signallingConnection(url);
    try {
      // The key is checked before any peer connection exists: a mismatch leaves nothing to tear down.
      const hello = await fetchKey(url, signal, url !== request.gateway ? keyDeadlineMs : undefined, connection);
      options.keys?.verify(request.gateway, hello.key);
      const trust = () => options.keys?.trust(request.gateway, hello.key);
      for (let attempt = 1; ; attempt += 1) {
        const offers = await offerAll(hello.iceServers, signal);
        const peers = offers.map((offer) => offer.peer);
        try {
          const sealed = { gateway: url, key: hello.key, credentials: options, trust };
          const [first, ...extra] = offers.map((offer) => offer.sdp);
          const extraOffers = extra.length > 0 ? { extraOffers: extra } : {};
          const { answers, earlyData, negotiated } = await exchange(
            sealed,
            request,
            { offer: first!, ...extraOffers, ...setup },
            signal,
            connection,
          );
          // A gateway before parallel connections answers the first offer only: the others go.
          const answered = peers.slice(0, answers.length);
          await closePeers(kind, peers.slice(answers.length));
          for (const [index, peer] of answered.entries()) await kind.accept(peer, answers[index]!, { negotiated });
          return new PeerNegotiation(kind, answered, request, earlyData);
        } catch (error) {
          await closePeers(kind, peers);
          // A TunnelError is the gateway's verdict (token, target, reachability): final. Anything else is
          // the WebRTC library refusing its own exchange. Seen with libdatachannel: on loopback ICE can
          // connect while the answer is still being applied, DTLS then fails for want of the remote
          // fingerprint, and applying the rest of the answer throws "remote candidate without ICE
          // transport". A fresh offer fixes it; a few at most, spaced so the race does not repeat.
          if (error instanceof TunnelError || signal.aborted || attempt >= 5) throw error;
          await delay(retryPauseMs(attempt), undefined, { signal });
        }
      }
    } finally {
      connection.destroy();
    }
  }

  /** Every peer's channel open, or every opened one closed again and the first failure thrown. */
  function openAll(peers: readonly P[], signal: AbortSignal): Promise<FrameChannel[]> {
    return allOrNone(
      peers.map((peer) => kind.open(peer, signal)),
      (channels) => {
        for (const channel of channels) channel.close();
      },
    );
  }

  return {
    negotiate: ({ signal, ...request }) => negotiateOnce(request, signal),

    async establish(negotiation: Negotiation, signal: AbortSignal): Promise<Link<Socket>> {
      let current = negotiation as PeerNegotiation<P>;
      let channel: FrameChannel | undefined;
      for (let attempt = 1; !channel; attempt += 1) {
        try {
          const bounded = AbortSignal.any([signal, AbortSignal.timeout(attemptWindowMs(attempt))]);
          channel = stripedFrames(await openAll(current.peers, bounded));
        } catch (error) {
          await current.close();
          if (signal.aborted) throw error;
          // Stalled or failed: a fresh offer/answer and peer connection, still bounded by the caller's
          // signal. The pause keeps a peer that fails at once from flooding the gateway with offers.
          await delay(retryPauseMs(attempt), undefined, { signal });
          current = await negotiateOnce(current.request, signal);
        }
      }
      const mux = new Mux(channel, { ...options.mux, earlyData: current.earlyData });
      const peer = current;
      // A SOCKS tunnel speaks SOCKS5 to each local client first; its CONNECT names the stream's destination.
      const socks = current.request.target === socksTarget;
      return {
        path: () => kind.selectedPath?.(peer.peers[0]!),
        // One target: the open frame names none, as gateways before multi-target expect.
        carry: socks
          ? (socket) => serveSocks(socket, (client, destination, onOpened) => mux.open(client, destination, onOpened), options.mux?.log)
          : (socket, target) => mux.carry(socket, peer.request.targets && peer.request.targets.length > 1 ? target : undefined),
        onLost: (handler) => mux.onLost(handler),
        async close() {
          await mux.close();
          await peer.close();
        },
      };
    },
  };
}

/** `base` + `/v1/…`, keeping a broker's `/sites/NAME` path. */
export function signallingUrl(base: string, path: string): URL {
  const url = new URL(base);
  url.pathname = `${url.pathname.replace(/\/+$/, '')}${path}`;
  url.search = '';
  return url;
}

/**
 * The URL did not answer (refused, timed out) or answered that it cannot reach the site now (a
 * broker's 502/503/504): the next URL of a list is worth asking. A 4xx is a verdict, never this.
 */
class Unanswered extends TunnelError {
  constructor(
    readonly reason: string,
    message: string,
  ) {
    super('gatewayUnreachable', message);
  }
}

const unreachable = (gateway: string, error: unknown) => {
  const { code, message } = error as { code?: string; message?: string };
  const why = code ?? message ?? String(error);
  return new Unanswered(
    `${gateway}: ${why}`,
    `gateway ${gateway} is unreachable (${why}); check --gateway / PAM_GATEWAY_URL and that the gateway runs`,
  );
};

const unavailable = (status: number) => status === 502 || status === 503 || status === 504;

/** GET /v1/key: the gateway's public key and, through a broker, the ICE servers it hands out. */
export async function fetchKey(
  gateway: string,
  signal: AbortSignal,
  deadlineMs?: number,
  agent: SignallingAgent | false = false,
): Promise<{ key: Buffer; iceServers: IceServer[] }> {
  const url = signallingUrl(gateway, '/v1/key');
  let response: HttpResponse;
  const bounded = deadlineMs ? AbortSignal.any([signal, AbortSignal.timeout(deadlineMs)]) : signal;
  try {
    response = await send(url, 'GET', undefined, bounded, agent);
  } catch (error) {
    if (signal.aborted) throw error;
    throw unreachable(gateway, bounded.aborted ? { code: `no answer within ${(deadlineMs ?? 0) / 1000} s` } : error);
  }
  const body = parseJson(response.body) as { kem?: unknown; key?: unknown; iceServers?: unknown; error?: unknown };
  if (response.status === 200 && body.kem === 'X25519' && typeof body.key === 'string') {
    const key = Buffer.from(body.key, 'base64');
    const servers = Array.isArray(body.iceServers) ? body.iceServers.filter(isIceServer) : [];
    if (key.length === 32) return { key, iceServers: servers };
  }
  if (response.status === 200) {
    throw new TunnelError(
      'gatewayUnreachable',
      `gateway ${gateway} answered 200 without a gateway key at ${url.href}: is it a pam gateway, or a broker site (…/sites/NAME)?`,
    );
  }
  const detail = typeof body.error === 'string' ? body.error : response.statusText;
  const hint =
    response.status === 200 || response.status === 404
      ? `; is ${gateway} a pam gateway, or a broker site (…/sites/NAME) whose gateway is registered?`
      : '';
  const message = `gateway ${gateway} answered HTTP ${response.status}: ${detail}${hint}`;
  if (unavailable(response.status)) throw new Unanswered(`${gateway}: HTTP ${response.status}: ${detail}`, message);
  throw new TunnelError('gatewayUnreachable', message);
}

function isIceServer(value: unknown): value is IceServer {
  const server = value as { urls?: unknown; username?: unknown; credential?: unknown } | null;
  return (
    typeof server === 'object' &&
    server !== null &&
    typeof server.urls === 'string' &&
    /^(stun|turns?):/.test(server.urls) &&
    (server.username === undefined || typeof server.username === 'string') &&
    (server.credential === undefined || typeof server.credential === 'string')
  );
}

interface SealedExchange {
  readonly gateway: string;
  readonly key: Buffer;
  readonly credentials: Credentials;
  /** Called once a sealed answer opened: the gateway proved it holds the key. */
  readonly trust: () => void;
}

/** POST the sealed offer; open the sealed answer; map every way signalling can fail to a kind that names the fix. */
async function exchange(
  sealed: SealedExchange,
  request: Omit<NegotiateRequest, 'signal'>,
  offer: { offer: string; extraOffers?: readonly string[]; answerSetup?: 'passive'; negotiatedChannel?: number },
  signal: AbortSignal,
  agent: SignallingAgent,
): Promise<{ answers: string[]; earlyData: boolean; negotiated: boolean }> {
  const url = signallingUrl(sealed.gateway, '/v1/tunnels');
  const target = request.target;
  const targets = request.targets ?? [target];
  const statement = {
    gateway: keyFingerprint(sealed.key),
    target,
    // A single target travels as before; several as a list the gateway checks name by name.
    ...(targets.length > 1 ? { targets } : {}),
    nonce: randomBytes(16).toString('hex'),
    timestamp: Date.now(),
    offer: offer.offer,
    ...(offer.extraOffers ? { extraOffers: offer.extraOffers } : {}),
    ...(request.reason !== undefined ? { reason: request.reason } : {}),
    ...(request.ticket !== undefined ? { ticket: request.ticket } : {}),
  };
  const { key, token } = sealed.credentials;
  // The private key never leaves this process: only the public key and the signature travel, sealed.
  const proof = key ? { key: key.publicKey.toString('base64'), signature: signStatement(key, statement).toString('base64') } : {};
  const { gateway: _gateway, ...fields } = statement;
  const plain = { ...fields, ...offer, ...(token !== undefined ? { token } : {}), ...proof };
  const { envelope, open } = await sealRequest(sealed.key, Buffer.from(JSON.stringify(plain)));
  let response: HttpResponse;
  try {
    response = await send(url, 'POST', envelope, signal, agent);
  } catch (error) {
    if (signal.aborted) throw error;
    throw unreachable(sealed.gateway, error);
  }
  if (response.status !== 200 || !response.sealed) {
    const body = parseJson(response.body) as { error?: unknown };
    const detail = typeof body.error === 'string' ? body.error : response.statusText;
    const message = `gateway ${sealed.gateway} answered HTTP ${response.status}: ${detail}`;
    if (unavailable(response.status)) throw new Unanswered(`${sealed.gateway}: HTTP ${response.status}: ${detail}`, message);
    throw new TunnelError('gatewayUnreachable', message);
  }
  let reply: {
    status?: unknown;
    answer?: unknown;
    extraAnswers?: unknown;
    earlyData?: unknown;
    negotiatedChannel?: unknown;
    error?: unknown;
    targets?: unknown;
  };
  try {
    reply = parseJson(open(response.body)) as typeof reply;
  } catch (error) {
    if (error instanceof SealError)
      throw new TunnelError(
        'gatewayKeyMismatch',
        `the answer from ${sealed.gateway} is not sealed by the gateway's key (${error.message}): no tunnel was set up`,
      );
    throw error;
  }
  sealed.trust();
  if (reply.status === 200 && typeof reply.answer === 'string') {
    // Handed to the WebRTC library as is, a non-SDP answer fails deep inside it as an internal error.
    const extra = Array.isArray(reply.extraAnswers) ? reply.extraAnswers.slice(0, offer.extraOffers?.length ?? 0) : [];
    const answers = [reply.answer, ...extra];
    if (answers.every((answer) => typeof answer === 'string' && /^v=0\r?\n/.test(answer))) {
      const negotiated = offer.negotiatedChannel !== undefined && reply.negotiatedChannel === offer.negotiatedChannel;
      return { answers: answers as string[], earlyData: reply.earlyData === true, negotiated };
    }
    throw new TunnelError(
      'gatewayUnreachable',
      `gateway ${sealed.gateway} answered 200 with something that is not an SDP answer: is ${url.href} a pam gateway?`,
    );
  }
  if (reply.status === 403 && typeof reply.error === 'string') {
    // An access decision (key, grant, source, limit, reason): the gateway's own words, already limited
    // to what this key may know.
    throw new TunnelError('accessRefused', `the gateway refused access: ${reply.error.slice(0, 500)}`);
  }
  if (reply.status === 401 || reply.status === 403) {
    throw new TunnelError(
      'authRefused',
      sealed.credentials.token === undefined
        ? 'the gateway admits only the shared token: set PAM_GATEWAY_TOKEN or pass --token-file'
        : 'the gateway refused the token; check PAM_GATEWAY_TOKEN or --token-file',
    );
  }
  if (reply.status === 404 && target === socksTarget) {
    const detail = typeof reply.error === 'string' ? reply.error : 'it serves named targets only';
    throw new TunnelError('unknownTarget', `the gateway does not serve SOCKS tunnels (${detail}); the gateway needs --socks-allow`);
  }
  if (reply.status === 404 && Array.isArray(reply.targets)) {
    const served = reply.targets.filter((name): name is string => typeof name === 'string');
    const unknown = targets.find((name) => !served.includes(name)) ?? target;
    throw new TunnelError(
      'unknownTarget',
      `target '${unknown}' is not served by the gateway (it serves: ${served.join(', ') || 'nothing'})`,
    );
  }
  const detail = typeof reply.error === 'string' ? reply.error : 'no reason given';
  throw new TunnelError('gatewayUnreachable', `gateway ${sealed.gateway} answered HTTP ${String(reply.status)}: ${detail}`);
}

function parseJson(body: Buffer): object {
  try {
    const parsed: unknown = JSON.parse(body.toString('utf8'));
    return typeof parsed === 'object' && parsed !== null ? parsed : {};
  } catch {
    return {};
  }
}

interface HttpResponse {
  readonly status: number;
  readonly statusText: string;
  readonly body: Buffer;
  /** The body is a sealed answer (content-type application/pam-sealed). */
  readonly sealed: boolean;
}

/** An answer is a few KiB; a gateway that sends more is not one. */
const maxResponseBytes = 256 * 1024;

type SignallingAgent = HttpAgent | HttpsAgent;

/** One kept-alive connection for one negotiation's requests; destroyed when the negotiation ends. */
function signallingConnection(gateway: string): SignallingAgent {
  const options = { keepAlive: true, maxSockets: 1 };
  return signallingUrl(gateway, '/').protocol === 'https:' ? new HttpsAgent(options) : new HttpAgent(options);
}

/**
 * One request with node:http(s), not fetch: fetch loads undici, ~12 MiB of resident memory that a
 * long-lived tunnel process would carry for one request. A request on the kept-alive connection that
 * the server closed in the meantime (its idle timeout) is sent once more on a fresh connection.
 */
function send(
  url: URL,
  method: 'GET' | 'POST',
  body: Buffer | undefined,
  signal: AbortSignal,
  agent: SignallingAgent | false,
): Promise<HttpResponse> {
  const requestFn = url.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const request = requestFn(url, {
      method,
      agent,
      signal,
      headers: body ? { 'content-type': sealedContentType, 'content-length': body.length } : {},
    });
    request.on('error', (error: NodeJS.ErrnoException) => {
      const stale = agent !== false && request.reusedSocket && (error.code === 'ECONNRESET' || error.code === 'EPIPE');
      if (stale && !signal.aborted) send(url, method, body, signal, false).then(resolve, reject);
      else reject(error);
    });
    request.on('response', (response) => {
      readBodyBytes(response, maxResponseBytes).then(
        (bytes) =>
          resolve({
            status: response.statusCode ?? 0,
            statusText: response.statusMessage ?? '',
            body: bytes,
            sealed: (response.headers['content-type'] ?? '').startsWith(sealedContentType),
          }),
        (error: unknown) => {
          request.destroy();
          reject(error instanceof BodyTooLarge ? new Error(`answer larger than ${maxResponseBytes} bytes`) : error);
        },
      );
    });
    request.end(body);
  });
}
