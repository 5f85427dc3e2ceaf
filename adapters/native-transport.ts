// The node-datachannel (libdatachannel) offerer behind the peer transport: --transport native.

import type { Socket } from 'node:net';
import type { DataChannel, PeerConnection } from 'node-datachannel';
import type { Transport } from '../machines/ports.js';
import { createPeerTransport, type PeerKind, type PeerTransportOptions } from './peer-transport.js';
import { createNativePeer, nativeChannelOpen, nativeFrames, nativeGathered, nativeSelectedPath } from './native-peer.js';
import { type IceOptions, nativeTurnOverTcp, turnOnlyOverTcp } from './ice-options.js';
import { TunnelError } from '../machines/errors.js';

interface NativePeer {
  readonly connection: PeerConnection;
  /** The pre-negotiated channel, or the DCEP one that replaced it for a gateway that did not make it. */
  channel: DataChannel;
}

/** The stream id of the pre-negotiated `pam-mux` channel (odd: DCEP channels of a DTLS client are even). */
export const negotiatedChannelId = 1;

export function nativeKind(ice: IceOptions = {}): PeerKind<NativePeer> {
  return {
    // libdatachannel follows the answer's role: as DTLS client it speaks first, once it has the answer.
    answerSetup: 'passive',
    negotiatedChannel: negotiatedChannelId,
    async offer(signal, servers = []) {
      const all = [...(ice.servers ?? []), ...servers];
      // A broker can hand out TURN over TCP only; libjuice would drop it without a word and ICE time out.
      if (turnOnlyOverTcp(all))
        throw new TunnelError('usage', `${nativeTurnOverTcp}, the only TURN the gateway's broker offers: use --transport werift`);
      const connection = createNativePeer('pam-client', { ...ice, servers: all });
      try {
        const channel = connection.createDataChannel('pam-mux', { unordered: false, negotiated: true, id: negotiatedChannelId });
        return { peer: { connection, channel }, sdp: await nativeGathered(connection, signal) };
      } catch (error) {
        connection.close();
        throw error;
      }
    },
    async accept(peer, answer, { negotiated }) {
      peer.connection.setRemoteDescription(answer, 'answer');
      if (negotiated) return;
      // A gateway from before negotiated channels waits for a DCEP OPEN: give it one. The local
      // description already has its application section, so this needs no new offer.
      peer.channel.close();
      peer.channel = peer.connection.createDataChannel('pam-mux', { unordered: false });
    },
    async open(peer, signal) {
      await nativeChannelOpen(peer.connection, peer.channel, signal);
      return nativeFrames(peer.connection, peer.channel);
    },
    selectedPath: (peer) => nativeSelectedPath(peer.connection),
    async close(peer) {
      try {
        peer.connection.close();
      } catch {
        // already closed
      }
    },
  };
}

export function createNativeTransport(options: PeerTransportOptions & { readonly ice?: IceOptions }): Transport<Socket> {
  return createPeerTransport(nativeKind(options.ice), options);
}
