// The gateway's answerer on node-datachannel (libdatachannel): --transport native.

import type { DataChannel, PeerConnection } from 'node-datachannel';
import type { FrameChannel } from '../adapters/mux.js';
import { createNativePeer, nativeFrames, nativeGathered, nativeSelectedPath, offerForPassiveAnswer } from '../adapters/native-peer.js';
import type { IceOptions } from '../adapters/ice-options.js';

const describePath = (path: { kind: string; pair: string } | undefined) => (path ? `${path.kind}: ${path.pair}` : undefined);
import type { Answerer } from './answerer.js';

export function nativeAnswerer(ice: IceOptions = {}): Answerer {
  const open = new Set<PeerConnection>();
  return {
    async answer(offer, signal, options = {}) {
      const peer = createNativePeer('pam-gateway', { ...ice, servers: [...(ice.servers ?? []), ...(options.servers ?? [])] });
      open.add(peer);
      const close = () => {
        if (!open.delete(peer)) return;
        try {
          peer.close();
        } catch {
          // already closed
        }
      };
      const ended: Array<() => void> = [];
      peer.onStateChange((state) => {
        if (state === 'failed' || state === 'closed') for (const handler of ended.splice(0)) handler();
      });
      try {
        const id = options.negotiatedChannel;
        const opened = (dataChannel: DataChannel) =>
          new Promise<FrameChannel>((resolve) => {
            if (dataChannel.isOpen()) return resolve(nativeFrames(peer, dataChannel));
            dataChannel.onOpen(() => resolve(nativeFrames(peer, dataChannel)));
          });
        // The client's DCEP channel is announced once SCTP is up: listen before the offer is applied.
        const announced =
          id === undefined
            ? new Promise<FrameChannel>((resolve) => peer.onDataChannel((dataChannel) => void opened(dataChannel).then(resolve)))
            : undefined;
        peer.setRemoteDescription(options.passive ? offerForPassiveAnswer(offer) : offer, 'offer');
        // A negotiated channel after the offer: the answer (made at once) already has the application
        // section, so it needs no new negotiation. It opens when SCTP connects; what arrives before is
        // queued by the library.
        const channel = announced ?? opened(peer.createDataChannel('pam-mux', { unordered: false, negotiated: true, id: id! }));
        const negotiated = id !== undefined;
        const sdp = await nativeGathered(peer, signal);
        return {
          sdp,
          channel,
          negotiated,
          onEnded: (handler) => void ended.push(handler),
          close,
          selectedPath: () => describePath(nativeSelectedPath(peer)),
        };
      } catch (error) {
        close();
        throw error;
      }
    },
    closeAll() {
      for (const peer of [...open]) {
        try {
          peer.close();
        } catch {
          // already closed
        }
      }
      open.clear();
    },
  };
}
