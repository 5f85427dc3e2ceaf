// Client side of the tunnel transport: HTTP signalling with the gateway (offer → answer, bearer
// token), then a werift data channel carrying the mux. Imported lazily: it pulls in werift.

import type { Socket } from 'node:net';
import type { RTCDataChannel, RTCPeerConnection } from 'werift';
import { TunnelError } from '../machines/errors.js';
import type { Link, NegotiateRequest, Negotiation, Transport } from '../machines/ports.js';
import { Mux, type MuxOptions } from './mux.js';
import { channelFrames, channelOpen, createPeer, gatheringComplete, type IceOptions } from './werift-peer.js';

export interface WeriftTransportOptions {
  readonly token: string;
  readonly ice?: IceOptions;
  readonly mux?: MuxOptions;
}

class PeerNegotiation implements Negotiation {
  constructor(
    readonly peer: RTCPeerConnection,
    readonly channel: RTCDataChannel,
  ) {}

  async close(): Promise<void> {
    await this.peer.close().catch(() => undefined);
  }
}

export function createWeriftTransport(options: WeriftTransportOptions): Transport<Socket> {
  return {
    async negotiate({ gateway, target, signal }: NegotiateRequest): Promise<Negotiation> {
      const peer = createPeer(options.ice);
      try {
        const channel = peer.createDataChannel('pam-mux', { ordered: true });
        await peer.setLocalDescription(await peer.createOffer());
        await gatheringComplete(peer, signal);
        const answer = await exchange(gateway, target, peer.localDescription!.sdp, options.token, signal);
        await peer.setRemoteDescription({ type: 'answer', sdp: answer });
        return new PeerNegotiation(peer, channel);
      } catch (error) {
        await peer.close().catch(() => undefined);
        throw error;
      }
    },

    async establish(negotiation: Negotiation, signal: AbortSignal): Promise<Link<Socket>> {
      const { peer, channel } = negotiation as PeerNegotiation;
      try {
        await channelOpen(peer, channel, signal);
      } catch (error) {
        if (signal.aborted) throw error;
        throw new TunnelError('gatewayUnreachable', `could not connect to the gateway: ${error instanceof Error ? error.message : String(error)}`);
      }
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
