// The gateway's answerer on node-datachannel (libdatachannel): --transport native.

import type { PeerConnection } from 'node-datachannel';
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
        const channel = new Promise<FrameChannel>((resolve) => {
          peer.onDataChannel((dataChannel) => {
            if (dataChannel.isOpen()) return resolve(nativeFrames(peer, dataChannel));
            dataChannel.onOpen(() => resolve(nativeFrames(peer, dataChannel)));
          });
        });
        peer.setRemoteDescription(options.passive ? offerForPassiveAnswer(offer) : offer, 'offer');
        const sdp = await nativeGathered(peer, signal);
        return {
          sdp,
          channel,
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
