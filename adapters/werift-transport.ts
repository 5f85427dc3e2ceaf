// Client side of the tunnel transport: HTTP signalling with the gateway (offer → answer, bearer
// token), then a werift data channel carrying the mux. Imported lazily: it pulls in werift.

import type { Socket } from 'node:net';
import type { RTCDataChannel, RTCPeerConnection } from 'werift';
import { TunnelError } from '../machines/errors.js';
import type { Link, NegotiateRequest, Negotiation, Transport } from '../machines/ports.js';
import { Mux, type MuxOptions } from './mux.js';
import { channelFrames, channelOpen, createPeer, gatheringComplete, withoutDefaultStun, type IceOptions } from './werift-peer.js';

export interface WeriftTransportOptions {
  readonly token: string;
  readonly ice?: IceOptions;
  readonly mux?: MuxOptions;
}

class PeerNegotiation implements Negotiation {
  constructor(
    readonly peer: RTCPeerConnection,
    readonly channel: RTCDataChannel,
    readonly request: Omit<NegotiateRequest, 'signal'>,
  ) {}

  async close(): Promise<void> {
    await this.peer.close().catch(() => undefined);
  }
}

/**
 * How long one ICE/DTLS attempt may take before a fresh peer connection is tried. werift's DTLS
 * handshake can wedge when a ClientHello is retransmitted before the other side listens (seen with
 * 20 tunnels starting at once on 2 cores); a new attempt succeeds, so attempts retry within --timeout.
 */
const attemptWindowMs = (attempt: number) => Math.min(5_000 * 1.5 ** (attempt - 1), 20_000);

export function createWeriftTransport(options: WeriftTransportOptions): Transport<Socket> {
  async function negotiateOnce(request: Omit<NegotiateRequest, 'signal'>, signal: AbortSignal): Promise<PeerNegotiation> {
    const peer = createPeer(options.ice);
    try {
      const channel = peer.createDataChannel('pam-mux', { ordered: true });
      const offer = await peer.createOffer();
      withoutDefaultStun(peer, options.ice);
      await peer.setLocalDescription(offer);
      await gatheringComplete(peer, signal);
      const answer = await exchange(request.gateway, request.target, peer.localDescription!.sdp, options.token, signal);
      await peer.setRemoteDescription({ type: 'answer', sdp: answer });
      return new PeerNegotiation(peer, channel, request);
    } catch (error) {
      await peer.close().catch(() => undefined);
      throw error;
    }
  }

  return {
    negotiate: ({ gateway, target, signal }) => negotiateOnce({ gateway, target }, signal),

    async establish(negotiation: Negotiation, signal: AbortSignal): Promise<Link<Socket>> {
      let current = negotiation as PeerNegotiation;
      for (let attempt = 1; ; attempt += 1) {
        try {
          await channelOpen(current.peer, current.channel, AbortSignal.any([signal, AbortSignal.timeout(attemptWindowMs(attempt))]));
          break;
        } catch (error) {
          await current.close();
          if (signal.aborted) throw error;
          // Stalled or failed: a fresh offer/answer and peer connection, still bounded by the caller's signal.
          current = await negotiateOnce(current.request, signal);
        }
      }
      const { peer, channel } = current;
      const mux = new Mux(channelFrames(peer, channel), options.mux);
      return {
        carry: (socket) => mux.carry(socket),
        onLost: (handler) => mux.onLost(handler),
        async close() {
          await mux.close();
          await peer.close().catch(() => undefined);
        },
      };
    },
  };
}

/** POST the offer; map every way signalling can fail to a failure kind that names the fix. */
async function exchange(gateway: string, target: string, offer: string, token: string, signal: AbortSignal): Promise<string> {
  const url = new URL('/v1/tunnels', gateway);
  let response: Response;
  try {
    response = await fetch(url, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ target, offer }),
      signal,
    });
  } catch (error) {
    if (signal.aborted) throw error;
    const cause = (error as { cause?: { code?: string; message?: string } }).cause;
    throw new TunnelError(
      'gatewayUnreachable',
      `gateway ${url.origin} is unreachable (${cause?.code ?? cause?.message ?? String(error)}); check --gateway / PAM_GATEWAY_URL and that the gateway runs`,
    );
  }
  const body = (await response.json().catch(() => ({}))) as { answer?: unknown; error?: unknown; targets?: unknown };
  if (response.ok && typeof body.answer === 'string') return body.answer;
  if (response.status === 401 || response.status === 403) {
    throw new TunnelError('authRefused', `the gateway refused the token; check PAM_GATEWAY_TOKEN or --token-file`);
  }
  if (response.status === 404 && Array.isArray(body.targets)) {
    const served = body.targets.filter((name): name is string => typeof name === 'string');
    throw new TunnelError('unknownTarget', `target '${target}' is not served by the gateway (it serves: ${served.join(', ') || 'nothing'})`);
  }
  const detail = typeof body.error === 'string' ? body.error : response.statusText;
  throw new TunnelError('gatewayUnreachable', `gateway ${url.origin} answered HTTP ${response.status}: ${detail}`);
}
