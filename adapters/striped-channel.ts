// One FrameChannel over several: each frame is prefixed with a sequence number (u32 BE), sent on the
// least-loaded channel, and delivered in sequence order at the other end. Each SCTP association has
// its own congestion and receive window, so N of them carry about N windows per round trip where one
// caps a long path (docs/decisions/0016-parallel-associations.md). Every channel underneath must be
// ordered and reliable; the mux above still sees one ordered, reliable channel.

import type { FrameChannel } from './mux.js';

const seqBytes = 4;

/**
 * What may wait out of order before the peer is declared broken. The mux's credit bounds what the
 * sender may have in flight (decision 0002); this only stops a peer that ignores it.
 */
export const maxReorderBytes = 64 * 1024 * 1024;

export function stripedFrames(channels: readonly FrameChannel[], reorderLimit = maxReorderBytes): FrameChannel {
  if (channels.length === 1) return channels[0]!;
  if (channels.length === 0) throw new Error('stripedFrames needs at least one channel');
  let sendSeq = 0;
  let nextSeq = 0;
  const early = new Map<number, Buffer>();
  let earlyBytes = 0;
  let ended = false;
  const frameHandlers: Array<(frame: Buffer) => void> = [];
  const drainHandlers: Array<() => void> = [];
  const closeHandlers: Array<(reason: string) => void> = [];

  const closeAll = () => {
    for (const channel of channels) channel.close();
  };
  const lost = (reason: string) => {
    if (ended) return;
    ended = true;
    early.clear();
    closeAll();
    for (const handler of closeHandlers) handler(reason);
  };
  const deliver = (frame: Buffer) => {
    for (const handler of frameHandlers) handler(frame);
  };

  channels.forEach((channel, index) => {
    channel.onFrame((frame) => {
      if (ended) return;
      if (frame.length < seqBytes) return lost(`malformed striped frame on connection ${index + 1}`);
      const seq = frame.readUInt32BE(0);
      const payload = frame.subarray(seqBytes);
      if (seq !== nextSeq) {
        // Ahead of a frame still on its way through a slower association: hold it.
        if (early.has(seq)) return lost(`sequence number ${seq} received twice`);
        early.set(seq, payload);
        earlyBytes += payload.length;
        if (earlyBytes > reorderLimit) lost(`more than ${reorderLimit} bytes arrived out of order`);
        return;
      }
      nextSeq = (nextSeq + 1) >>> 0;
      deliver(payload);
      for (let held = early.get(nextSeq); held !== undefined && !ended; held = early.get(nextSeq)) {
        early.delete(nextSeq);
        earlyBytes -= held.length;
        nextSeq = (nextSeq + 1) >>> 0;
        deliver(held);
      }
    });
    // Any one draining may be what the mux waits for; a spurious resume only pauses again on the next send.
    channel.onDrain(() => {
      for (const handler of drainHandlers) handler();
    });
    channel.onClose((reason) => lost(channels.length > 1 ? `${reason} (connection ${index + 1} of ${channels.length})` : reason));
  });

  // Bytes given to each channel, kept relative to the least-loaded one: frames differ in size (a 64 KiB
  // socket read is a 60 KiB frame and a 4 KiB one), so counting frames would load some channels far
  // more than others. A channel that was avoided while its queue was long catches up by at most `lag`.
  const load = channels.map(() => 0);
  const lag = 256 * 1024;
  const pick = (bytes: number): FrameChannel => {
    let best = 0;
    let least = Number.POSITIVE_INFINITY;
    for (const [index, channel] of channels.entries()) {
      const waiting = channel.bufferedAmount + load[index]!;
      if (waiting < least) {
        least = waiting;
        best = index;
      }
    }
    load[best]! += bytes;
    const floor = Math.min(...load);
    for (let index = 0; index < load.length; index += 1) load[index] = Math.min(load[index]! - floor, lag);
    return channels[best]!;
  };

  return {
    send(frame) {
      const striped = Buffer.allocUnsafe(seqBytes + frame.length);
      striped.writeUInt32BE(sendSeq, 0);
      frame.copy(striped, seqBytes);
      sendSeq = (sendSeq + 1) >>> 0;
      pick(striped.length).send(striped);
    },
    // The least-loaded channel's: frames go there next, so the mux pauses only when every channel is
    // backed up. What all of them hold together is still bounded by the mux's credit.
    get bufferedAmount() {
      return Math.min(...channels.map((channel) => channel.bufferedAmount));
    },
    onFrame: (handler) => void frameHandlers.push(handler),
    onDrain: (handler) => void drainHandlers.push(handler),
    onClose: (handler) => void closeHandlers.push(handler),
    close() {
      if (ended) return;
      ended = true;
      early.clear();
      closeAll();
    },
  };
}
