// The werift (pure TypeScript WebRTC) offerer behind the peer transport. Imported lazily: it pulls
// in werift (~140 ms of start-up).

import type { Socket } from 'node:net';
import type { RTCDataChannel, RTCPeerConnection } from 'werift';
import type { Transport } from '../machines/ports.js';
import { createPeerTransport, type PeerKind, type PeerTransportOptions } from './peer-transport.js';
import { type IceOptions, type IceServer, parseIceUrl } from './ice-options.js';
import { channelFrames, channelOpen, createPeer, gatheringComplete, weriftSelectedPath, withoutDefaultStun } from './werift-peer.js';

export interface WeriftTransportOptions extends PeerTransportOptions {
  readonly ice?: IceOptions;
}

interface WeriftPeer {
  readonly connection: RTCPeerConnection;
  readonly channel: RTCDataChannel;
}

/**
 * werift uses the first STUN and the first TURN server it is given and ignores the rest. Where both
 * are offered, TURN over TCP goes first: it also works where UDP is blocked (the case werift is there
 * for: libjuice, under the native transport, relays over UDP only), and the relay is only used when
 * no direct pair works anyway.
 */
export function weriftServerOrder(servers: readonly IceServer[]): IceServer[] {
  const overTcp = (server: IceServer) => server.urls.startsWith('turn') && parseIceUrl(server.urls)?.transport === 'tcp';
  return [...servers.filter(overTcp), ...servers.filter((server) => !overTcp(server))];
}

export function weriftKind(ice: IceOptions = {}): PeerKind<WeriftPeer> {
  return {
    async offer(signal, servers = []) {
      const withServers = { ...ice, servers: weriftServerOrder([...(ice.servers ?? []), ...servers]) };
      const connection = createPeer(withServers);
      try {
        const channel = connection.createDataChannel('pam-mux', { ordered: true });
        const offer = await connection.createOffer();
        withoutDefaultStun(connection, withServers);
        await connection.setLocalDescription(offer);
        await gatheringComplete(connection, signal);
        return { peer: { connection, channel }, sdp: connection.localDescription!.sdp };
      } catch (error) {
        await connection.close().catch(() => undefined);
        throw error;
      }
    },
    async accept(peer, answer) {
      await peer.connection.setRemoteDescription({ type: 'answer', sdp: answer });
    },
    async open(peer, signal) {
      await channelOpen(peer.connection, peer.channel, signal);
      return channelFrames(peer.connection, peer.channel);
    },
    selectedPath: (peer) => weriftSelectedPath(peer.connection),
    async close(peer) {
      await peer.connection.close().catch(() => undefined);
    },
  };
}

export function createWeriftTransport(options: WeriftTransportOptions): Transport<Socket> {
  return createPeerTransport(weriftKind(options.ice), options);
}
