// The gateway's WebRTC side as a port: take an offer, return an answer and, once the client's data
// channel opens, its frames. werift here (--transport werift); node-datachannel, the default, in
// native-answerer.ts.

import type { FrameChannel } from '../adapters/mux.js';
import { stripedFrames } from '../adapters/striped-channel.js';
import type { IceOptions, IceServer } from '../adapters/ice-options.js';
import { channelFrames, createPeer, gatheringComplete, weriftSelectedPath, withoutDefaultStun } from '../adapters/werift-peer.js';

export interface Answer {
  readonly sdp: string;
  /** Resolves with the channel's frames once the client's data channel is open. */
  readonly channel: Promise<FrameChannel>;
  /** Called once when the connection fails or closes. */
  onEnded(handler: () => void): void;
  close(): void;
  /** Once connected: `direct` or `relay`, and the selected candidate pair, when the library tells. */
  selectedPath?(): string | undefined;
  /** The channel is the pre-negotiated one the client asked for (AnswerOptions.negotiatedChannel), made here. */
  readonly negotiated?: boolean;
}

/** A tunnel's answers, one per parallel connection, seen as one (decision 0016). */
export interface BundledAnswer extends Omit<Answer, 'sdp'> {
  /** In the order of the offers. */
  readonly sdps: string[];
}

/** The frames of all the answers' channels as one striped channel; ended when any one ends. */
export function bundleAnswers(answers: readonly Answer[]): BundledAnswer {
  let ended = false;
  const handlers: Array<() => void> = [];
  for (const answer of answers) {
    answer.onEnded(() => {
      if (ended) return;
      ended = true;
      for (const handler of handlers.splice(0)) handler();
    });
  }
  return {
    sdps: answers.map((answer) => answer.sdp),
    channel: Promise.all(answers.map((answer) => answer.channel)).then((channels) => stripedFrames(channels)),
    onEnded: (handler) => void handlers.push(handler),
    close() {
      for (const answer of answers) answer.close();
    },
    selectedPath: () => answers[0]?.selectedPath?.(),
    negotiated: answers.every((answer) => answer.negotiated === true),
  };
}

export interface AnswerOptions {
  /** The client asked for `a=setup:passive` (it will be the DTLS client). */
  readonly passive?: boolean;
  /** ICE servers for this answer only (a broker hands them out per exchange), added to the gateway's own. */
  readonly servers?: readonly IceServer[];
  /**
   * The client's channel is pre-negotiated with this stream id: make the same one instead of waiting
   * for a DCEP OPEN (decision 0017). An answerer that cannot leaves `negotiated` unset on its answer.
   */
  readonly negotiatedChannel?: number;
}

export interface Answerer {
  /** werift's answerer always answers `a=setup:active` and ignores `options.passive` and `options.negotiatedChannel`. */
  answer(offer: string, signal: AbortSignal, options?: AnswerOptions): Promise<Answer>;
  /** Close every connection this answerer made (gateway shutdown). */
  closeAll(): void;
}

export function weriftAnswerer(ice: IceOptions = {}): Answerer {
  const open = new Set<{ close(): Promise<void> }>();
  return {
    async answer(offer, signal, options = {}) {
      const withServers = { ...ice, servers: [...(ice.servers ?? []), ...(options.servers ?? [])] };
      const peer = createPeer(withServers);
      open.add(peer);
      const close = () => {
        open.delete(peer);
        void peer.close().catch(() => undefined);
      };
      try {
        const channel = new Promise<FrameChannel>((resolve) => {
          peer.onDataChannel.subscribe((dataChannel) => {
            if (dataChannel.readyState === 'open') return resolve(channelFrames(peer, dataChannel));
            const subscription = dataChannel.stateChanged.subscribe((state) => {
              if (state !== 'open') return;
              subscription.unSubscribe();
              resolve(channelFrames(peer, dataChannel));
            });
          });
        });
        await peer.setRemoteDescription({ type: 'offer', sdp: offer });
        const answer = await peer.createAnswer();
        withoutDefaultStun(peer, withServers);
        await peer.setLocalDescription(answer);
        await gatheringComplete(peer, signal);
        return {
          sdp: peer.localDescription!.sdp,
          channel,
          onEnded(handler) {
            peer.connectionStateChange.subscribe((state) => {
              if (state === 'failed' || state === 'closed') handler();
            });
          },
          close,
          selectedPath() {
            const path = weriftSelectedPath(peer);
            return path ? `${path.kind}: ${path.pair}` : undefined;
          },
        };
      } catch (error) {
        close();
        throw error;
      }
    },
    closeAll() {
      for (const peer of [...open]) void peer.close().catch(() => undefined);
      open.clear();
    },
  };
}
