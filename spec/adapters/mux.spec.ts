// The mux between real TCP sockets over an in-memory channel pair: bytes intact both ways with
// half-close, bounded buffering against a reader that stops, per-connection failures, resets, keepalive.

import { createHash, randomBytes } from 'node:crypto';
import { connect, createServer, type Socket, type AddressInfo } from 'node:net';
import t from 'tap';
import { Mux, type MuxOptions } from '../../adapters/mux.js';
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
