// Frames striped over several ordered channels: delivered in order and intact whatever the channels'
// relative delays, bytes balanced across channels, and every way a peer can break the sequence ends the
// channel with a reason.

import { createHash, randomBytes } from 'node:crypto';
import t from 'tap';
import type { FrameChannel } from '../../adapters/mux.js';
import { stripedFrames } from '../../adapters/striped-channel.js';
import { framePair } from '../support/frame-pair.js';
import type { TapTest } from '../support/tap.js';

const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/** N channel pairs, each delivering after its own delay (ms), so frames overtake each other across pairs. */
function delayedPairs(delays: readonly number[]) {
  const pairs = delays.map(() => framePair());
  const carried = delays.map(() => 0);
  for (const [index, [near]] of pairs.entries()) {
    const send = near.send.bind(near);
    // One timer per frame with the same delay keeps this channel's own order.
    near.send = (frame: Buffer) => {
      carried[index] += frame.length;
      setTimeout(() => send(frame), delays[index]);
    };
  }
  return { near: pairs.map(([near]) => near), far: pairs.map(([, far]) => far), carried };
}

const frames = (count: number) =>
  Array.from({ length: count }, (_, index) => randomBytes(index % 2 === 0 ? 60 * 1024 : 4 * 1024 + (index % 7)));

t.test('one channel is used as it is: no sequence numbers on the wire', async (t) => {
  const [near] = framePair();
  t.equal(stripedFrames([near]), near);
  t.throws(() => stripedFrames([]));
});

t.test('frames sent over four channels with different delays arrive in order, intact, bytes balanced', async (t) => {
  const { near, far, carried } = delayedPairs([0, 7, 25, 3]);
  const sender = stripedFrames(near);
  const receiver = stripedFrames(far);
  const sent = frames(600);
  const got: Buffer[] = [];
  const all = new Promise<void>((resolve) =>
    receiver.onFrame((frame) => {
      got.push(frame);
      if (got.length === sent.length) resolve();
    }),
  );
  for (const frame of sent) sender.send(frame);
  await all;
  t.equal(got.length, sent.length);
  t.equal(sha(Buffer.concat(got)), sha(Buffer.concat(sent)), 'the same bytes in the same order');
  t.ok(
    got.every((frame, index) => frame.equals(sent[index]!)),
    'frame boundaries kept',
  );
  const share = carried.map((bytes) => bytes / carried.reduce((sum, each) => sum + each, 0));
  t.ok(
    share.every((part) => part > 0.18 && part < 0.32),
    `each channel carried about a quarter of the bytes (${share.map((part) => part.toFixed(2)).join(', ')}), not of the frames`,
  );
});

t.test('a channel whose bytes arrive late gets fewer of them; the mux sees the least-loaded one', async (t) => {
  // Channel 2 delivers 200 ms late: its backlog (bytes the peer has not counted yet) stays high, so new
  // frames go to channel 1 instead of an equal share that everything after them would wait for.
  const { near, far, carried } = delayedPairs([0, 200]);
  const sender = stripedFrames(near);
  const receiver = stripedFrames(far);
  const sent = frames(400);
  let got = 0;
  const all = new Promise<void>((resolve) =>
    receiver.onFrame(() => {
      got += 1;
      if (got === sent.length) resolve();
    }),
  );
  for (const [index, frame] of sent.entries()) {
    sender.send(frame);
    if (index % 20 === 19) await new Promise((resolve) => setTimeout(resolve, 10));
  }
  await all;
  const slow = carried[1]! / (carried[0]! + carried[1]!);
  t.ok(slow < 0.3, `the late channel carried ${(slow * 100).toFixed(0)} % of the bytes`);

  const [a] = framePair();
  const [b] = framePair();
  const striped = stripedFrames([a, b]);
  a.bufferedAmount = 4 * 1024 * 1024;
  t.equal(striped.bufferedAmount, 0, 'bufferedAmount is the least-loaded channel’s');
  let drained = 0;
  striped.onDrain(() => (drained += 1));
  for (const frame of frames(20)) b.send(frame);
  await new Promise((resolve) => setTimeout(resolve, 20));
  t.ok(drained > 0, 'a drain of any channel reaches the mux');
});

/** Raw frames with a chosen sequence number, written under the striped receiver. */
const raw = (seq: number, payload = Buffer.from('x')) => {
  const frame = Buffer.alloc(4 + payload.length);
  frame.writeUInt32BE(seq, 0);
  payload.copy(frame, 4);
  return frame;
};

async function brokenBy(t: TapTest, frames: (near: FrameChannel[]) => void, reorderLimit?: number): Promise<string> {
  const pairs = [framePair(), framePair()];
  const receiver = stripedFrames(
    pairs.map(([, far]) => far),
    reorderLimit,
  );
  const delivered: Buffer[] = [];
  receiver.onFrame((frame) => delivered.push(frame));
  const reason = new Promise<string>((resolve) => receiver.onClose(resolve));
  frames(pairs.map(([near]) => near));
  const why = await reason;
  t.ok(
    pairs.every(([near, far]) => far.closed || near.closed),
    'every channel underneath is closed',
  );
  return why;
}

t.test('a peer that breaks the sequence ends the channel with a reason', async (t) => {
  t.match(
    await brokenBy(
      t,
      ([a]) => {
        for (let seq = 1; seq <= 20; seq += 1) a!.send(raw(seq, Buffer.alloc(1024)));
      },
      8 * 1024,
    ),
    /more than 8192 bytes arrived out of order/,
  );
  t.match(
    await brokenBy(t, ([a, b]) => {
      a!.send(raw(3));
      b!.send(raw(3));
    }),
    /sequence number 3 received twice/,
  );
  t.match(await brokenBy(t, ([a]) => a!.send(Buffer.from([0, 1]))), /malformed striped frame on connection 1/);
  t.match(await brokenBy(t, ([, b]) => b!.send(raw(0xffffffff, Buffer.alloc(3)))), /malformed count frame on connection 2/);
  t.match(
    await brokenBy(t, ([a]) => a!.send(raw(0xffffffff, Buffer.from([0, 0, 0, 9, 0, 0, 0, 0])))),
    /connection 1 counted more bytes than were sent/,
  );
  t.match(
    await brokenBy(t, ([a, b]) => {
      b!.close();
      setTimeout(() => a!.close(), 10);
    }),
    /the data channel closed \(connection 1 of 2\)/,
  );
  // One closes and the other never does (its path failed silently): reported after the grace period.
  const hold = setTimeout(() => undefined, 3_000);
  t.match(await brokenBy(t, ([, b]) => b!.close()), /the data channel closed \(connection 2 of 2\)/);
  clearTimeout(hold);
});

t.test('a count due on a channel that closed under it ends the striped channel, not the process', async (t) => {
  // Seen in CI: the 20 ms count timer fired after libdatachannel closed a channel but before its close
  // event reached JavaScript, and the send threw out of a timer (an uncaught exception in the gateway).
  const pairs = [framePair(), framePair()];
  const receiver = stripedFrames(pairs.map(([, far]) => far));
  const reason = new Promise<string>((resolve) => receiver.onClose(resolve));
  pairs[1]![0].send(raw(0, Buffer.alloc(100)));
  await new Promise((resolve) => setTimeout(resolve, 5));
  // Closed on this side without its close reaching the striped channel yet.
  pairs[0]![1].close();
  // The count's timer is unref'd (it never keeps a process alive): wait with one that is.
  await new Promise((resolve) => setTimeout(resolve, 60));
  t.match(await reason, /a count could not be sent: channel closed/);
});

t.test('frames still on their way on one connection are delivered though another closed first', async (t) => {
  // Seen in CI: a revoked tunnel's goodbye (why it ends) travelled on one association while another's
  // close arrived first; the client took it for a lost link, reconnected and was refused.
  const { near, far } = delayedPairs([30, 0]);
  const sender = stripedFrames(near);
  const receiver = stripedFrames(far);
  const seen: string[] = [];
  receiver.onFrame((frame) => seen.push(frame.toString()));
  const ended = new Promise<void>((resolve) =>
    receiver.onClose(() => {
      seen.push('closed');
      resolve();
    }),
  );
  sender.send(Buffer.from('goodbye'));
  near[1]!.close();
  setTimeout(() => near[0]!.close(), 60);
  await ended;
  t.same(seen, ['goodbye', 'closed'], 'the last frame first, then the end');
});

t.test('frames that arrive before the mux is put on the channel are held for it, not dropped', async (t) => {
  // Seen in CI (a reconnect): the client sent its first OPEN as soon as its channels were open, while
  // the gateway still waited for its last one before putting the mux on; the OPEN was dropped.
  const pairs = [framePair(), framePair()];
  const sender = stripedFrames(pairs.map(([near]) => near));
  const receiver = stripedFrames(pairs.map(([, far]) => far));
  for (const word of ['open', 'data', 'more']) sender.send(Buffer.from(word));
  await new Promise((resolve) => setTimeout(resolve, 10));
  const seen: string[] = [];
  receiver.onFrame((frame) => seen.push(frame.toString()));
  t.same(seen, ['open', 'data', 'more']);
});
