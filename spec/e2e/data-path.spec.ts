// The data path at production grade, end to end through real processes: a long bulk stream, 1,000
// concurrent connections, a slow reader that must not make anyone buffer, half-close, reset, and a
// refused target that closes only its own connection.

import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { connect, Socket } from 'node:net';
import t from 'tap';
import {
  echoServer,
  freePort,
  pam,
  roundTrip,
  scratchDir,
  startGatewayProc,
  tcpServer,
  tunnelEnv,
  type Teardownable,
} from '../support/processes.js';

const token = 'datapath-token-1b2c';
const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');
const listenPort = async (t: Teardownable, onSocket: (socket: Socket) => void) => (await tcpServer(t, onSocket)).port;
const rssMiB = (pid: number) => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;

async function tunnelTo(t: Teardownable, targets: Record<string, number>, target: string) {
  const dir = scratchDir(t);
  const gateway = await startGatewayProc(t, dir, token, targets);
  const tunnel = pam(t, ['tunnel', 'start', target, '-fg', '--json'], { env: tunnelEnv(dir, token, gateway.url) });
  const port = Number((await tunnel.event('ready', 60_000)).port);
  return { gateway, tunnel, port };
}

t.test('1 GiB through one connection, sha256-equal at the target', async (t) => {
  let resolveDigest!: (digest: string) => void;
  const received = new Promise<string>((resolve) => (resolveDigest = resolve));
  const target = await listenPort(t, (socket) => {
    const hash = createHash('sha256');
    socket.on('data', (chunk: Buffer) => hash.update(chunk));
    socket.on('end', () => {
      resolveDigest(hash.digest('hex'));
      socket.end();
    });
  });
  const { port } = await tunnelTo(t, { sink: target }, 'sink');
  const block = randomBytes(1024 * 1024);
  const sent = createHash('sha256');
  const socket = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  socket.on('error', () => undefined);
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  for (let mib = 0; mib < 1024; mib += 1) {
    sent.update(block);
    if (!socket.write(block)) await new Promise((resolve) => socket.once('drain', resolve));
  }
  socket.end();
  t.equal(await received, sent.digest('hex'), '1 GiB arrived byte for byte');
  socket.destroy();
});

t.test('1,000 concurrent connections × 64 KiB each, all echoed intact', async (t) => {
  const echo = await echoServer(t);
  const { port } = await tunnelTo(t, { echo: echo.port }, 'echo');
  const results = await Promise.all(
    Array.from({ length: 1000 }, async () => {
      const payload = randomBytes(64 * 1024);
      return roundTrip(port, payload).then(
        (echoed) => sha(echoed) === sha(payload),
        () => false,
      );
    }),
  );
  t.equal(results.filter(Boolean).length, 1000, 'every connection got its own bytes back');
});

t.test('a reader at 1 MiB/s with a fast sender: neither process buffers the difference', async (t) => {
  let reader: Socket | undefined;
  let read = 0;
  const target = await listenPort(t, (socket) => {
    reader = socket;
    socket.pause();
  });
  const { gateway, tunnel, port } = await tunnelTo(t, { slow: target }, 'slow');
  // The baseline is taken 3 s into the flow, once both processes have warmed up to carrying data at
  // all (heap spaces, werift's SCTP state); growth after that is what buffering would add.
  let before = { tunnel: 0, gateway: 0 };
  const sender = connect(port, '127.0.0.1');
  sender.on('error', () => undefined);
  t.teardown(() => sender.destroy());
  const block = randomBytes(256 * 1024);
  let sent = 0;
  let sending = true;
  const pump = () => {
    while (sending && sender.write(block)) sent += block.length;
    if (sending) sender.once('drain', pump);
  };
  sender.once('connect', pump);
  // The target reads 100 KiB every 100 ms (1 MiB/s) for 30 s.
  const peaks = { tunnel: 0, gateway: 0 };
  for (let tick = 0; tick < 300; tick += 1) {
    if (tick === 30) {
      before = { tunnel: rssMiB(tunnel.pid), gateway: rssMiB(gateway.proc.pid) };
      Object.assign(peaks, before);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
    if (reader) {
      let chunk: Buffer | null;
      let budget = 100 * 1024;
      while (budget > 0 && (chunk = reader.read(Math.min(budget, reader.readableLength || budget)) as Buffer | null)) {
        read += chunk.length;
        budget -= chunk.length;
      }
    }
    if (tick > 30 && tick % 10 === 0) {
      peaks.tunnel = Math.max(peaks.tunnel, rssMiB(tunnel.pid));
      peaks.gateway = Math.max(peaks.gateway, rssMiB(gateway.proc.pid));
    }
  }
  sending = false;
  t.ok(read > 10 * 1024 * 1024, `the reader got ${(read / 1048576).toFixed(1)} MiB`);
  t.ok(sent - read < 64 * 1024 * 1024, `the sender was held back: ${(sent / 1048576).toFixed(1)} MiB accepted from it`);
  t.ok(
    peaks.tunnel - before.tunnel < 32,
    `tunnel RSS grew ${(peaks.tunnel - before.tunnel).toFixed(1)} MiB over 27 s (from ${before.tunnel.toFixed(0)}; bound 32)`,
  );
  t.ok(
    peaks.gateway - before.gateway < 32,
    `gateway RSS grew ${(peaks.gateway - before.gateway).toFixed(1)} MiB over 27 s (from ${before.gateway.toFixed(0)}; bound 32)`,
  );
});

t.test('half-close carries through; a reset resets; a refused target closes only its connection', async (t) => {
  // Target: on the client's FIN, answer and close.
  const halfClose = await listenPort(t, (socket) => {
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('end', () => socket.end(`got ${Buffer.concat(chunks).length} bytes after your FIN`));
  });
  const resetting = await listenPort(t, (socket) => socket.once('data', () => socket.resetAndDestroy()));
  const refused = await freePort();
  const dir = scratchDir(t);
  const gateway = await startGatewayProc(t, dir, token, { half: halfClose, reset: resetting, gone: refused });
  const env = tunnelEnv(dir, token, gateway.url);
  const open = async (target: string) => {
    const tunnel = pam(t, ['tunnel', 'start', target, '-fg', '--json'], { env });
    return { tunnel, port: Number((await tunnel.event('ready')).port) };
  };

  const half = await open('half');
  const answer = await new Promise<string>((resolve, reject) => {
    const socket = new Socket({ allowHalfOpen: true });
    let text = '';
    socket.on('data', (chunk: Buffer) => (text += chunk.toString()));
    socket.once('error', reject);
    socket.once('end', () => {
      socket.end();
      resolve(text);
    });
    socket.connect(half.port, '127.0.0.1', () => socket.end(Buffer.alloc(12345)));
  });
  t.equal(answer, 'got 12345 bytes after your FIN', 'the FIN reached the target after every byte, and its answer came back');

  const reset = await open('reset');
  const outcome = await new Promise<string>((resolve) => {
    const socket = connect(reset.port, '127.0.0.1', () => socket.write('hello'));
    socket.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
    socket.on('end', () => resolve('orderly end'));
  });
  t.equal(outcome, 'ECONNRESET', 'a reset at the target resets the local connection');

  const gone = await open('gone');
  const closed = await new Promise<string>((resolve) => {
    const socket = connect(gone.port, '127.0.0.1');
    socket.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
    socket.on('close', () => resolve('closed'));
  });
  t.match(closed, /ECONNRESET|closed/, 'the connection to a refused target is closed');
  t.equal(gone.tunnel.child.exitCode, null, 'the tunnel itself stays up');
  t.match(gateway.proc.stderr, /ECONNREFUSED/, 'the gateway logs why');
  for (const tunnel of [half.tunnel, reset.tunnel, gone.tunnel]) tunnel.child.kill('SIGTERM');
  t.same(await Promise.all([half.tunnel.exited, reset.tunnel.exited, gone.tunnel.exited]), [0, 0, 0]);
});
