// The client transport, independent of the WebRTC library: HTTP signalling with the gateway (offer →
// answer, bearer token), then a data channel carrying the mux; a wedged ICE/DTLS attempt is retried
// with a fresh peer connection within the caller's deadline. werift and node-datachannel plug in as
// a PeerKind (adapters/werift-transport.ts, adapters/native-transport.ts).

import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Socket } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { TunnelError } from '../machines/errors.js';
import type { Link, NegotiateRequest, Negotiation, Transport } from '../machines/ports.js';
import { BodyTooLarge, readBody } from './http-body.js';
import { Mux, type FrameChannel, type MuxOptions } from './mux.js';

/** One WebRTC library's offerer side. `P` is its peer handle. */
export interface PeerKind<P> {
  /** A peer with a data channel, its offer gathered (non-trickle). */
  offer(signal: AbortSignal): Promise<{ peer: P; sdp: string }>;
  accept(peer: P, answer: string): Promise<void>;
  /** Resolve with the channel once open; reject with a readable reason if the connection fails. */
  open(peer: P, signal: AbortSignal): Promise<FrameChannel>;
  close(peer: P): Promise<void>;
  /**
   * Ask the gateway to answer `a=setup:passive`, so this offerer is the DTLS client. libdatachannel
   * asks; werift does not (as DTLS client it fails against libdatachannel's OpenSSL server).
   */
  readonly answerSetup?: 'passive';
}

export interface PeerTransportOptions {
  readonly token: string;
  readonly mux?: MuxOptions;
}

class PeerNegotiation<P> implements Negotiation {
  constructor(
    readonly kind: PeerKind<P>,
    readonly peer: P,
    readonly request: Omit<NegotiateRequest, 'signal'>,
  ) {}

  close(): Promise<void> {
    return this.kind.close(this.peer);
  }
}

/**
 * How long one ICE/DTLS attempt may take before a fresh peer connection is tried. werift's DTLS
 * handshake can wedge when a ClientHello is retransmitted before the other side listens (seen with
 * 20 tunnels starting at once on 2 cores); a new attempt succeeds, so attempts retry within --timeout.
 */
const attemptWindowMs = (attempt: number) => Math.min(5_000 * 1.5 ** (attempt - 1), 20_000);
/** Before retry n + 1: none after the first failure, then 250 ms doubling to 2 s. */
const retryPauseMs = (attempt: number) => (attempt <= 1 ? 0 : Math.min(125 * 2 ** (attempt - 1), 2_000));

export function createPeerTransport<P>(kind: PeerKind<P>, options: PeerTransportOptions): Transport<Socket> {
  async function negotiateOnce(request: Omit<NegotiateRequest, 'signal'>, signal: AbortSignal): Promise<PeerNegotiation<P>> {
    const setup = kind.answerSetup ? { answerSetup: kind.answerSetup } : {};
    for (let attempt = 1; ; attempt += 1) {
      const { peer, sdp } = await kind.offer(signal);
      try {
        await kind.accept(peer, await exchange(request.gateway, request.target, { offer: sdp, ...setup }, options.token, signal));
        return new PeerNegotiation(kind, peer, request);
      } catch (error) {
        await kind.close(peer);
        // A TunnelError is the gateway's verdict (token, target, reachability): final. Anything else is
        // the WebRTC library refusing its own exchange. Seen with libdatachannel: on loopback ICE can
        // connect while the answer is still being applied, DTLS then fails for want of the remote
        // fingerprint, and applying the rest of the answer throws "remote candidate without ICE
        // transport". A fresh offer fixes it; a few at most, spaced so the race does not repeat.
        if (error instanceof TunnelError || signal.aborted || attempt >= 5) throw error;
        await delay(retryPauseMs(attempt), undefined, { signal });
      }
    }
  }

  return {
    negotiate: ({ gateway, target, signal }) => negotiateOnce({ gateway, target }, signal),

    async establish(negotiation: Negotiation, signal: AbortSignal): Promise<Link<Socket>> {
      let current = negotiation as PeerNegotiation<P>;
      let channel: FrameChannel | undefined;
      for (let attempt = 1; !channel; attempt += 1) {
        try {
          channel = await kind.open(current.peer, AbortSignal.any([signal, AbortSignal.timeout(attemptWindowMs(attempt))]));
        } catch (error) {
          await current.close();
          if (signal.aborted) throw error;
          // Stalled or failed: a fresh offer/answer and peer connection, still bounded by the caller's
          // signal. The pause keeps a peer that fails at once from flooding the gateway with offers.
          await delay(retryPauseMs(attempt), undefined, { signal });
          current = await negotiateOnce(current.request, signal);
        }
      }
      const mux = new Mux(channel, options.mux);
      const peer = current;
      return {
        carry: (socket) => mux.carry(socket),
        onLost: (handler) => mux.onLost(handler),
        async close() {
          await mux.close();
          await peer.close();
        },
      };
    },
  };
}

/** POST the offer; map every way signalling can fail to a failure kind that names the fix. */
async function exchange(gateway: string, target: string, offer: { offer: string; answerSetup?: 'passive' }, token: string, signal: AbortSignal): Promise<string> {
  // Relative to the gateway URL's own path, so a gateway behind a path-prefix proxy
  // (http://host/pam → http://host/pam/v1/tunnels) is reached where it lives.
  const url = new URL('v1/tunnels', gateway.endsWith('/') ? gateway : `${gateway}/`);
  let response: JsonResponse;
  try {
    response = await postJson(url, token, JSON.stringify({ target, ...offer }), signal);
  } catch (error) {
    if (signal.aborted) throw error;
    const { code, message } = error as { code?: string; message?: string };
    throw new TunnelError(
      'gatewayUnreachable',
      `gateway ${gateway} is unreachable (${code ?? message ?? String(error)}); check --gateway / PAM_GATEWAY_URL and that the gateway runs`,
    );
  }
  const body = response.body as { answer?: unknown; error?: unknown; targets?: unknown };
  if (response.status === 200 && typeof body.answer === 'string') {
    // Handed to the WebRTC library as is, a non-SDP answer fails deep inside it as an internal error.
    if (/^v=0\r?\n/.test(body.answer)) return body.answer;
    throw new TunnelError('gatewayUnreachable', `gateway ${gateway} answered 200 with something that is not an SDP answer: is ${url.href} a pam gateway?`);
  }
  if (response.status === 401 || response.status === 403) {
    throw new TunnelError('authRefused', `the gateway refused the token; check PAM_GATEWAY_TOKEN or --token-file`);
  }
  if (response.status === 404 && Array.isArray(body.targets)) {
    const served = body.targets.filter((name): name is string => typeof name === 'string');
    throw new TunnelError('unknownTarget', `target '${target}' is not served by the gateway (it serves: ${served.join(', ') || 'nothing'})`);
  }
  const detail = typeof body.error === 'string' ? body.error : response.statusText;
  throw new TunnelError('gatewayUnreachable', `gateway ${gateway} answered HTTP ${response.status}: ${detail}`);
}

interface JsonResponse {
  readonly status: number;
  readonly statusText: string;
  /** The parsed JSON body, or {} when it is not JSON. */
  readonly body: object;
}

/** An answer is a few KiB; a gateway that sends more is not one. */
const maxResponseBytes = 256 * 1024;

/**
 * One POST with node:http(s), not fetch: fetch loads undici, ~12 MiB of resident memory that a
 * long-lived tunnel process would carry for one request. One connection, closed after the answer.
 */
function postJson(url: URL, token: string, body: string, signal: AbortSignal): Promise<JsonResponse> {
  const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const request = send(url, {
      method: 'POST',
      agent: false,
      signal,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
    });
    request.on('error', reject);
    request.on('response', (response) => {
      readBody(response, maxResponseBytes).then(
        (text) => {
          let parsed: unknown;
          try {
            parsed = JSON.parse(text);
          } catch {
            parsed = {};
          }
          resolve({ status: response.statusCode ?? 0, statusText: response.statusMessage ?? '', body: typeof parsed === 'object' && parsed !== null ? parsed : {} });
        },
        (error: unknown) => {
          request.destroy();
          reject(error instanceof BodyTooLarge ? new Error(`answer larger than ${maxResponseBytes} bytes`) : error);
        },
      );
    });
    request.end(body);
  });
}
