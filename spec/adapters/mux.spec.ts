// The mux between real TCP sockets over an in-memory channel pair: bytes intact both ways with
// half-close, bounded buffering against a reader that stops, per-connection failures, resets, keepalive.

import { createHash, randomBytes } from 'node:crypto';
import { connect, createServer, type Socket, type AddressInfo } from 'node:net';
import t from 'tap';
import { firstFrameBytes, frameType, maxPayloadBytes, Mux, type MuxOptions } from '../../adapters/mux.js';
import { framePair } from '../support/frame-pair.js';
import { halfCloseExchange, tcpServer } from '../support/processes.js';
import type { TapTest } from '../support/tap.js';

const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');

const dialPort = (port: number) => () =>
  new Promise<Socket>((resolve, reject) => {
    const socket = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    socket.once('connect', () => resolve(socket));
    socket.once('error', reject);
  });

/** A client mux whose carried sockets come from a local listener, and a gateway mux dialling `targetPort`. */
async function tunnel(t: TapTest, targetPort: number, options: MuxOptions = {}) {
  const [near, far] = framePair();
  const client = new Mux(near, options);
  const logged: string[] = [];
  const dialled: Socket[] = [];
  const dial = dialPort(targetPort);
  const gateway = new Mux(far, {
    ...options,
    dial: async () => {
      const socket = await dial();
      dialled.push(socket);
      return socket;
    },
    log: (line) => logged.push(line),
  });
  t.teardown(() => Promise.all([client.close(), gateway.close()]));
  const local = await tcpServer(t, (socket) => client.carry(socket));
  return { client, gateway, channel: near, far, local, logged, dialled };
}

t.test('two connections carry 4 MiB each way, byte for byte, with half-close', async (t) => {
  const received: string[] = [];
  const target = await tcpServer(t, (socket) => {
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('end', () => {
      const all = Buffer.concat(chunks);
      received.push(sha(all));
      // Answer with the upload reversed in 4 KiB blocks, only after the client's FIN arrived.
      socket.end(Buffer.concat([all.subarray(all.length / 2), all.subarray(0, all.length / 2)]));
    });
  });
  const { local, client } = await tunnel(t, target.port);
  const uploads = [randomBytes(4 * 1024 * 1024), randomBytes(4 * 1024 * 1024 + 3)];
  const replies = await Promise.all(uploads.map((upload) => halfCloseExchange(local.port, upload)));
  t.same(received.sort(), uploads.map(sha).sort(), 'target received both uploads intact');
  uploads.forEach((upload, index) => {
    const half = upload.length / 2;
    t.equal(sha(replies[index]!), sha(Buffer.concat([upload.subarray(half), upload.subarray(0, half)])), `reply ${index} intact`);
  });
  for (let i = 0; i < 100 && client.streamCount > 0; i += 1) await new Promise((resolve) => setTimeout(resolve, 10));
  t.equal(client.streamCount, 0, 'finished streams are forgotten');
});

t.test('a target that stops reading bounds what the gateway buffers', async (t) => {
  let targetSocket: Socket | undefined;
  const target = await tcpServer(t, (socket) => {
    socket.pause();
    targetSocket = socket;
  });
  const windowBytes = 128 * 1024;
  // The window may grow while kernel buffers still hide the stalled reader, never past this.
  const maxWindowBytes = 4 * windowBytes;
  const { local, far, dialled } = await tunnel(t, target.port, { windowBytes, maxWindowBytes });
  const writer = connect(local.port, '127.0.0.1');
  t.teardown(() => writer.destroy());
  writer.on('error', () => undefined);
  const total = 32 * 1024 * 1024;
  let written = 0;
  const block = randomBytes(64 * 1024);
  await new Promise<void>((resolve) => {
    const pump = () => {
      while (written < total) {
        written += block.length;
        if (!writer.write(block)) return writer.once('drain', pump);
      }
    };
    writer.once('connect', pump);
    setTimeout(resolve, 1500);
  });
  t.ok(targetSocket, 'target got the connection');
  const atGateway = dialled[0]?.writableLength ?? -1;
  t.ok(
    atGateway >= 0 && atGateway <= maxWindowBytes + 64 * 1024,
    `gateway holds ${atGateway} bytes for the stalled target (window ${windowBytes}, at most ${maxWindowBytes})`,
  );
  t.ok(far.bufferedAmount < 2 * 1024 * 1024, `channel back towards the client holds ${far.bufferedAmount} bytes`);
  t.ok(written < total, `the writer was held back (${written} of ${total} bytes accepted)`);
  // Resume the target: everything written arrives.
  let arrived = 0;
  targetSocket!.on('data', (chunk: Buffer) => (arrived += chunk.length));
  targetSocket!.resume();
  writer.end();
  await new Promise<void>((resolve) => targetSocket!.once('end', () => resolve()));
  t.equal(arrived, written, 'no byte lost once the target reads again');
});

t.test('connections that keep draining get larger windows, within both caps, given back when they end', async (t) => {
  let delivered = 0;
  const target = await tcpServer(t, (socket) => {
    socket.on('data', (chunk: Buffer) => (delivered += chunk.length));
    socket.on('end', () => socket.end());
  });
  const windowBytes = 64 * 1024;
  const maxWindowBytes = 1024 * 1024;
  const maxGrowthBytes = 2 * 1024 * 1024;
  const { local, gateway, far } = await tunnel(t, target.port, { windowBytes, maxWindowBytes, maxGrowthBytes });
  // Credit the gateway grants, read off the frames it sends (type 5: window, u32 after the header).
  let credited = 0;
  const send = far.send.bind(far);
  far.send = (frame: Buffer) => {
    if (frame[0] === 5) credited += frame.readUInt32BE(5);
    send(frame);
  };
  let peakGrowth = 0;
  const sampler = setInterval(() => (peakGrowth = Math.max(peakGrowth, gateway.grownBytes)), 1);
  t.teardown(() => clearInterval(sampler));
  const upload = randomBytes(8 * 1024 * 1024);
  // One connection first: its window grows past the initial one, never past maxWindowBytes.
  await halfCloseExchange(local.port, upload);
  t.equal(delivered, upload.length);
  t.ok(credited > delivered, `credit granted (${credited}) exceeds the bytes delivered (${delivered}): the window grew`);
  t.ok(
    peakGrowth > 0 && peakGrowth <= maxWindowBytes - windowBytes,
    `one stream grew by ${peakGrowth} bytes (cap ${maxWindowBytes - windowBytes})`,
  );
  // Eight at once: together they never borrow more than maxGrowthBytes.
  await new Promise((resolve) => setTimeout(resolve, 50));
  peakGrowth = 0;
  await Promise.all(Array.from({ length: 8 }, () => halfCloseExchange(local.port, upload)));
  t.equal(delivered, 9 * upload.length, 'every byte of the eight uploads arrived');
  t.ok(
    peakGrowth > maxWindowBytes - windowBytes && peakGrowth <= maxGrowthBytes,
    `eight streams grew by ${peakGrowth} bytes at most at once (cap ${maxGrowthBytes})`,
  );
  for (let i = 0; i < 100 && gateway.streamCount > 0; i += 1) await new Promise((resolve) => setTimeout(resolve, 10));
  t.equal(gateway.grownBytes, 0, 'ended streams give their growth back');
});

t.test('a refused target closes that one connection; the tunnel keeps serving', async (t) => {
  const closedPort = await new Promise<number>((resolve) => {
    const probe = createServer();
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as AddressInfo;
      probe.close(() => resolve(port));
    });
  });
  const { local, logged, client } = await tunnel(t, closedPort);
  const outcome = await new Promise<string>((resolve) => {
    const socket = connect(local.port, '127.0.0.1');
    socket.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
    socket.on('close', () => resolve('closed'));
  });
  t.match(outcome, /ECONNRESET|closed/, 'the local connection is closed');
  t.match(logged.join('\n'), /ECONNREFUSED/, 'gateway says why');
  const lost: string[] = [];
  client.onLost((reason) => lost.push(reason));
  t.same(lost, [], 'the tunnel itself is not lost');
});

t.test('a reset at the target resets the local connection', async (t) => {
  const target = await tcpServer(t, (socket) => socket.once('data', () => socket.resetAndDestroy()));
  const { local } = await tunnel(t, target.port);
  const outcome = await new Promise<string>((resolve) => {
    const socket = connect(local.port, '127.0.0.1', () => socket.write('hello'));
    socket.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
    socket.on('end', () => resolve('orderly end'));
  });
  t.equal(outcome, 'ECONNRESET');
});

t.test('a peer that stops answering is declared lost by the keepalive', async (t) => {
  const target = await tcpServer(t, () => undefined);
  const { client, far } = await tunnel(t, target.port, { keepaliveIntervalMs: 20, keepaliveDeadMs: 200 });
  far.stalled = true; // nothing from the gateway reaches the client any more
  const reason = await new Promise<string>((resolve) => client.onLost(resolve));
  t.match(reason, /no keepalive answer from the peer/);
});

t.test('the peer closing its channel is a loss with a reason; close() from this side is not', async (t) => {
  const target = await tcpServer(t, () => undefined);
  const { client, gateway } = await tunnel(t, target.port);
  const lost: string[] = [];
  gateway.onLost((reason) => lost.push(`gateway: ${reason}`));
  const clientLost = new Promise<string>((resolve) => client.onLost(resolve));
  await gateway.close();
  t.equal(await clientLost, 'the peer closed the tunnel');
  t.same(lost, [], 'the side that closed is not told it lost anything');
});

t.test('a goodbye may carry why: revoked reaches the peer as a revoked ending with its reason; a plain goodbye is lost', async (t) => {
  const [near, far] = framePair();
  const client = new Mux(near);
  const gateway = new Mux(far);
  const ended = new Promise<[string, string]>((resolve) => client.onLost((reason, ending) => resolve([reason, ending])));
  await gateway.close(500, { ending: 'revoked', reason: 'access revoked: key removed' });
  t.same(await ended, ['access revoked: key removed', 'revoked']);

  const [a, b] = framePair();
  const other = new Mux(a);
  const peer = new Mux(b);
  const plain = new Promise<[string, string]>((resolve) => other.onLost((reason, ending) => resolve([reason, ending])));
  await peer.close();
  t.same(await plain, ['the peer closed the tunnel', 'lost'], 'no farewell: an ordinary loss, which may be reconnected');
});

/** Call `record` with each frame `channel` sends, before it goes. */
function onSend(channel: { send(frame: Buffer): void }, record: (frame: Buffer) => void): void {
  const send = channel.send.bind(channel);
  channel.send = (frame: Buffer) => {
    record(frame);
    send(frame);
  };
}

/** Each frame `channel` sends, as type · stream id · payload length, in order. */
function sentFrames(channel: { send(frame: Buffer): void }): Array<{ type: number; id: number; bytes: number }> {
  const frames: Array<{ type: number; id: number; bytes: number }> = [];
  onSend(channel, (frame) => frames.push({ type: frame.readUInt8(0), id: frame.readUInt32BE(1), bytes: frame.length - 5 }));
  return frames;
}

t.test("a stream's first data frames are small and double up to the largest, so its first bytes arrive in the first flight", async (t) => {
  const reply = randomBytes(512 * 1024);
  const target = await tcpServer(t, (socket) => socket.end(reply));
  const { local, far } = await tunnel(t, target.port);
  const frames = sentFrames(far);
  const received = await halfCloseExchange(local.port, Buffer.alloc(0));
  t.equal(sha(received), sha(reply), 'the reply arrived intact');
  const sizes = frames.filter((frame) => frame.type === frameType.data).map((frame) => frame.bytes);
  t.equal(sizes[0], firstFrameBytes, 'the first data frame carries 1 KiB');
  t.ok(
    sizes.slice(0, 6).every((size, index) => size <= firstFrameBytes * 2 ** index),
    `each of the first frames at most twice the one before (${sizes.slice(0, 8).join(', ')})`,
  );
  t.ok(sizes.includes(maxPayloadBytes), 'bulk still travels in the largest frames');
  t.ok(Math.max(...sizes) <= maxPayloadBytes, 'no frame above the largest');
});

t.test('a stream that starts on a busy channel sends full frames at once; after the channel idled, small ones again', async (t) => {
  const reply = randomBytes(2 * 1024 * 1024);
  const target = await tcpServer(t, (socket) => socket.end(reply));
  const { local, far } = await tunnel(t, target.port, { coldIdleMs: 300 });
  const frames = sentFrames(far);
  const firstFrame = async () => {
    const before = frames.length;
    t.equal(sha(await halfCloseExchange(local.port, Buffer.alloc(0))), sha(reply));
    return frames.slice(before).find((frame) => frame.type === frameType.data)?.bytes;
  };
  t.equal(await firstFrame(), firstFrameBytes, 'a fresh channel: 1 KiB first');
  t.equal(await firstFrame(), maxPayloadBytes, 'right after 2 MiB went through: a full frame first');
  await new Promise((resolve) => setTimeout(resolve, 500));
  t.equal(await firstFrame(), firstFrameBytes, 'after more than coldIdleMs without data: 1 KiB first again');
});

/** A gateway mux whose dial waits `ms` first: a target far away, or an access check that takes time. */
async function slowTunnel(t: TapTest, targetPort: number, ms: number, earlyData: boolean) {
  const [near, far] = framePair();
  const client = new Mux(near, { earlyData });
  const dial = dialPort(targetPort);
  const gateway = new Mux(far, {
    dial: async () => {
      await new Promise((resolve) => setTimeout(resolve, ms));
      return dial();
    },
  });
  t.teardown(() => Promise.all([client.close(), gateway.close()]));
  // The order of what the client sent and what it heard, by frame type.
  const order: string[] = [];
  onSend(near, (frame) => order.push(`sent ${frame.readUInt8(0)}`));
  onSend(far, (frame) => order.push(`heard ${frame.readUInt8(0)}`));
  const local = await tcpServer(t, (socket) => client.carry(socket));
  return { local, order };
}

const echoReversed = (t: TapTest) =>
  tcpServer(t, (socket) => {
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('end', () => socket.end(Buffer.from(Buffer.concat(chunks)).reverse()));
  });

t.test('with early data, a connection sends before its target answered; the gateway holds it, in order, FIN included', async (t) => {
  const target = await echoReversed(t);
  const { local, order } = await slowTunnel(t, target.port, 300, true);
  const upload = randomBytes(200 * 1024);
  const reply = await halfCloseExchange(local.port, upload);
  t.equal(sha(reply), sha(Buffer.from(upload).reverse()), 'the target got every early byte and the FIN, in order');
  const firstData = order.indexOf(`sent ${frameType.data}`);
  const opened = order.indexOf(`heard ${frameType.openOk}`);
  t.ok(firstData >= 0 && firstData < opened, 'data went out before OPEN_OK came back');
  t.ok(order.indexOf(`sent ${frameType.fin}`) < opened, 'so did the FIN');
});

t.test('without early data (a gateway from before it), no byte goes before OPEN_OK', async (t) => {
  const target = await echoReversed(t);
  const { local, order } = await slowTunnel(t, target.port, 100, false);
  const upload = randomBytes(64 * 1024);
  const reply = await halfCloseExchange(local.port, upload);
  t.equal(sha(reply), sha(Buffer.from(upload).reverse()));
  t.ok(order.indexOf(`sent ${frameType.data}`) > order.indexOf(`heard ${frameType.openOk}`), 'the first data frame follows OPEN_OK');
});

t.test('early data of a connection the gateway refuses never reaches anything; the local client gets a reset', async (t) => {
  const [near, far] = framePair();
  const client = new Mux(near, { earlyData: true });
  const gateway = new Mux(far, {
    dial: () => new Promise<Socket>((_, reject) => setTimeout(() => reject(new Error('target refused')), 100)),
  });
  t.teardown(() => Promise.all([client.close(), gateway.close()]));
  const local = await tcpServer(t, (socket) => client.carry(socket));
  const outcome = await new Promise<string>((resolve) => {
    const socket = connect(local.port, '127.0.0.1', () => socket.write(randomBytes(10_000)));
    socket.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
    socket.on('close', () => resolve('closed'));
  });
  t.match(outcome, /ECONNRESET|closed/);
  t.equal(gateway.streamCount, 0, 'the gateway kept nothing of it');
});

t.test('a peer that sends more early data than its window gets that connection reset, and the target none of it', async (t) => {
  const [near, far] = framePair();
  let targetBytes = 0;
  const target = await tcpServer(t, (socket) => socket.on('data', (chunk: Buffer) => (targetBytes += chunk.length)));
  const logged: string[] = [];
  const dial = dialPort(target.port);
  const gateway = new Mux(far, {
    windowBytes: 4096,
    startWindowBytes: 8192,
    dial: async () => {
      await new Promise((resolve) => setTimeout(resolve, 100));
      return dial();
    },
    log: (line) => logged.push(line),
  });
  t.teardown(() => gateway.close());
  const heard: Array<{ type: number; id: number }> = [];
  near.onFrame((frame) => heard.push({ type: frame.readUInt8(0), id: frame.readUInt32BE(1) }));
  const frame = (type: number, id: number, payload = Buffer.alloc(0)) => Buffer.concat([Buffer.from([type, 0, 0, 0, id]), payload]);
  near.send(frame(frameType.open, 1));
  // The window as lent at the open (8 KiB) and one socket read (64 KiB) may come early; this is more.
  for (let i = 0; i < 20; i += 1) near.send(frame(frameType.data, 1, randomBytes(4000)));
  await new Promise((resolve) => setTimeout(resolve, 300));
  t.ok(
    heard.some((one) => one.type === frameType.rst && one.id === 1),
    'the connection was reset',
  );
  t.equal(targetBytes, 0, 'the target got no byte');
  t.match(logged.join('\n'), /more than its window before the target answered/);
  t.equal(gateway.streamCount, 0);
});

t.test('a new connection starts with a larger window lent from the budget, on both sides, and gives it back', async (t) => {
  const windowBytes = 64 * 1024;
  const startWindowBytes = 512 * 1024;
  const maxGrowthBytes = 640 * 1024;
  const [near, far] = framePair();
  const target = await tcpServer(t, (socket) => {
    socket.resume();
    socket.on('end', () => socket.end());
  });
  const dial = dialPort(target.port);
  const options = { windowBytes, startWindowBytes, maxGrowthBytes };
  const client = new Mux(near, options);
  const gateway = new Mux(far, { ...options, dial: () => dial() });
  t.teardown(() => Promise.all([client.close(), gateway.close()]));
  // What each side grants: WINDOW frames as [stream id, credit].
  const granted = (channel: typeof near) => {
    const grants: Array<[number, number]> = [];
    onSend(channel, (frame) => {
      if (frame.readUInt8(0) === frameType.window) grants.push([frame.readUInt32BE(1), frame.readUInt32BE(5)]);
    });
    return grants;
  };
  const fromClient = granted(near);
  const fromGateway = granted(far);
  const local = await tcpServer(t, (socket) => client.carry(socket));
  const sockets = [connect(local.port, '127.0.0.1'), connect(local.port, '127.0.0.1')];
  for (const socket of sockets) socket.on('error', () => undefined);
  await new Promise((resolve) => setTimeout(resolve, 200));
  const lent = startWindowBytes - windowBytes;
  // The first stream borrows all it asks for; the second what is left of the budget.
  t.same(
    fromClient,
    [
      [1, lent],
      [3, maxGrowthBytes - lent],
    ],
    'the client lends its receive windows right after OPEN',
  );
  t.same(
    fromGateway,
    [
      [1, lent],
      [3, maxGrowthBytes - lent],
    ],
    'the gateway lends its own on accepting',
  );
  t.equal(client.grownBytes, maxGrowthBytes);
  t.equal(gateway.grownBytes, maxGrowthBytes);
  for (const socket of sockets) socket.end();
  for (let waited = 0; waited < 2000 && (client.grownBytes > 0 || gateway.grownBytes > 0); waited += 20)
    await new Promise((resolve) => setTimeout(resolve, 20));
  t.equal(client.grownBytes, 0, 'ended streams give it back (client)');
  t.equal(gateway.grownBytes, 0, 'ended streams give it back (gateway)');
});
