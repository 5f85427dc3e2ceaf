// One FrameChannel over several: each frame is prefixed with a sequence number (u32 BE), sent on the
// channel with the least backlog, and delivered in sequence order at the other end. Each side tells
// the other, every 64 KiB it receives, how many bytes came in on each channel (sequence number
// 0xffffffff, then a u32 per channel), so the sender knows each channel's backlog. Each SCTP
// association has its own congestion and receive window, so N of them carry about N windows per
// round trip where one caps a long path (docs/decisions/0016-parallel-associations.md). Every channel underneath must be
// ordered and reliable; the mux above still sees one ordered, reliable channel.

import { frameHandlers, type FrameChannel } from './mux.js';

const seqBytes = 4;
/** Not a data frame: the peer's count of bytes received per channel. Data sequence numbers skip it. */
const ackSeq = 0xffffffff;
const nextOf = (seq: number) => (seq === ackSeq - 1 ? 0 : seq + 1);
/** A count goes back after this many data bytes, or 20 ms after the first uncounted one. */
const ackEveryBytes = 64 * 1024;
const ackDelayMs = 20;
/** How long the others may take to close after one channel closed, before the end is reported anyway. */
const closeGraceMs = 2_000;

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
  const frames = frameHandlers();
  const drainHandlers: Array<() => void> = [];
  const closeHandlers: Array<(reason: string) => void> = [];

  const closeAll = () => {
    for (const channel of channels) channel.close();
  };
  /** Ends it once: timers stopped, held frames dropped, every channel closed; false if it had ended. */
  const end = (): boolean => {
    if (ended) return false;
    ended = true;
    clearTimeout(ackTimer);
    clearTimeout(graceTimer);
    early.clear();
    closeAll();
    return true;
  };
  const lost = (reason: string) => {
    if (end()) for (const handler of closeHandlers) handler(reason);
  };
  const deliver = (frame: Buffer) => frames.emit(frame);

  const closedAt = channels.map(() => false);
  let graceTimer: NodeJS.Timeout | undefined;
  // Bytes sent on / received from each channel (mod 2^32), and what the peer said it received.
  const sent = channels.map(() => 0);
  const received = channels.map(() => 0);
  const acked = channels.map(() => 0);
  let uncounted = 0;
  let ackTimer: NodeJS.Timeout | undefined;
  const outstanding = (index: number) => (sent[index]! - acked[index]!) >>> 0;

  const sendAck = () => {
    clearTimeout(ackTimer);
    ackTimer = undefined;
    uncounted = 0;
    if (ended) return;
    const ack = Buffer.allocUnsafe(seqBytes + 4 * channels.length);
    ack.writeUInt32BE(ackSeq, 0);
    for (const [index, bytes] of received.entries()) ack.writeUInt32BE(bytes, seqBytes + 4 * index);
    // From a timer, outside the mux's own guard: a channel can be closed before its close event is seen.
    try {
      transmit(ack);
    } catch (error) {
      lost(`a count could not be sent: ${error instanceof Error ? error.message : String(error)}`);
    }
  };
  const counted = (bytes: number) => {
    uncounted += bytes;
    if (uncounted >= ackEveryBytes) sendAck();
    else if (!ackTimer) {
      ackTimer = setTimeout(sendAck, ackDelayMs);
      ackTimer.unref();
    }
  };
  const takeAck = (frame: Buffer, index: number) => {
    if (frame.length !== seqBytes + 4 * channels.length) return lost(`malformed count frame on connection ${index + 1}`);
    for (let each = 0; each < channels.length; each += 1) {
      const said = frame.readUInt32BE(seqBytes + 4 * each);
      // Counts can overtake each other across channels: an older one says less, and is ignored. One
      // that says more than was sent is a broken peer.
      if ((said - acked[each]!) >>> 0 >= 2 ** 31) continue;
      if ((sent[each]! - said) >>> 0 >= 2 ** 31) return lost(`connection ${each + 1} counted more bytes than were sent`);
      acked[each] = said;
    }
  };

  channels.forEach((channel, index) => {
    channel.onFrame((frame) => {
      if (ended) return;
      if (frame.length < seqBytes) return lost(`malformed striped frame on connection ${index + 1}`);
      received[index] = (received[index]! + frame.length) >>> 0;
      const seq = frame.readUInt32BE(0);
      if (seq === ackSeq) return takeAck(frame, index);
      counted(frame.length);
      const payload = frame.subarray(seqBytes);
      if (seq !== nextSeq) {
        // Ahead of a frame still on its way through a slower association: hold it.
        if (early.has(seq)) return lost(`sequence number ${seq} received twice`);
        early.set(seq, payload);
        earlyBytes += payload.length;
        if (earlyBytes > reorderLimit) lost(`more than ${reorderLimit} bytes arrived out of order`);
        return;
      }
      nextSeq = nextOf(nextSeq);
      deliver(payload);
      for (let held = early.get(nextSeq); held !== undefined && !ended; held = early.get(nextSeq)) {
        early.delete(nextSeq);
        earlyBytes -= held.length;
        nextSeq = nextOf(nextSeq);
        deliver(held);
      }
    });
    // Any one draining may be what the mux waits for; a spurious resume only pauses again on the next send.
    channel.onDrain(() => {
      for (const handler of drainHandlers) handler();
    });
    channel.onClose((reason) => {
      if (ended || closedAt[index]) return;
      closedAt[index] = true;
      const why = `${reason} (connection ${index + 1} of ${channels.length})`;
      // Each association delivers everything sent on it before its own close, but not before the
      // others': the peer's last frames (a goodbye saying why it ends) may still be on its way on
      // another. So the end is reported once every channel has closed, or after a grace period for
      // one that fails without closing the rest.
      if (closedAt.every(Boolean)) return lost(why);
      graceTimer ??= setTimeout(() => lost(why), closeGraceMs);
      graceTimer.unref();
    });
  });

  /**
   * The channel with the least backlog: bytes sent on it that the peer has not counted yet. A channel
   * that slows down (a smaller congestion window, a retransmission timeout) keeps a backlog and so gets
   * fewer new frames, instead of an equal share that everything behind it in sequence would wait for.
   * Bytes, not frames: a 64 KiB socket read is a 60 KiB frame and a 4 KiB one.
   */
  const pick = (): number => {
    let best = closedAt.indexOf(false);
    if (best < 0) best = 0;
    for (let index = best + 1; index < channels.length; index += 1)
      if (!closedAt[index] && outstanding(index) < outstanding(best)) best = index;
    return best;
  };
  const transmit = (frame: Buffer) => {
    const index = pick();
    sent[index] = (sent[index]! + frame.length) >>> 0;
    channels[index]!.send(frame);
  };

  return {
    send(frame) {
      const striped = Buffer.allocUnsafe(seqBytes + frame.length);
      striped.writeUInt32BE(sendSeq, 0);
      frame.copy(striped, seqBytes);
      sendSeq = nextOf(sendSeq);
      transmit(striped);
    },
    // The least-loaded channel's: frames go there next, so the mux pauses only when every channel is
    // backed up. What all of them hold together is still bounded by the mux's credit.
    get bufferedAmount() {
      return Math.min(...channels.map((channel) => channel.bufferedAmount));
    },
    onFrame: (handler) => frames.add(handler),
    onDrain: (handler) => void drainHandlers.push(handler),
    onClose: (handler) => void closeHandlers.push(handler),
    close: () => void end(),
  };
}
