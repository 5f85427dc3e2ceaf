// The processes the WAN bench and spec run inside the lab's namespaces (a Node process cannot enter a
// namespace itself). Each prints one JSON line. Data is an AES-CTR keystream of a seed, so both ends
// know the sha256 of what must arrive without sending it.
//   serve HOST PORT MIB SEED           every connection receives MIB MiB, then FIN; also sinks uploads
//   fetch HOST PORT MIB SEED SECONDS   read MIB MiB, check the sha256, give up after SECONDS
//   upload HOST PORT MIB SEED SECONDS  send MIB MiB to a `serve` and wait for its digest line
//   udp-echo HOST PORT                 echo UDP datagrams
//   udp-ping HOST PORT COUNT           median/min round trip of COUNT datagrams
//   ready PORT SECONDS -- CMD ARGS…    run CMD until it exits 0 (ready), then until a byte arrives through
//                                      127.0.0.1:PORT (or the port in CMD's JSON output): both times in ms

import { spawn } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { connect, createServer, type Socket } from 'node:net';

const mib = 1024 * 1024;
const zeros = Buffer.alloc(mib);
const out = (value: unknown): void => void process.stdout.write(`${JSON.stringify(value)}\n`);
const now = () => Number(process.hrtime.bigint()) / 1e6;

function keystream(seed: string): () => Buffer {
  const key = createHash('sha256').update(`pam-wan-${seed}`).digest();
  const cipher = createCipheriv('aes-128-ctr', key.subarray(0, 16), key.subarray(16, 32));
  return () => cipher.update(zeros);
}

function expectedDigest(mibs: number, seed: string): string {
  const next = keystream(seed);
  const hash = createHash('sha256');
  for (let i = 0; i < mibs; i += 1) hash.update(next());
  return hash.digest('hex');
}

async function send(socket: Socket, mibs: number, seed: string): Promise<void> {
  const next = keystream(seed);
  for (let i = 0; i < mibs && !socket.destroyed; i += 1) {
    if (socket.write(next())) continue;
    // One listener pair per wait, both removed after: a long send must not pile up close listeners.
    await new Promise<void>((resolve) => {
      const done = () => {
        socket.off('drain', done).off('close', done);
        resolve();
      };
      socket.on('drain', done).on('close', done);
    });
  }
  socket.end();
}

/** Hash what arrives until FIN, `bytes` or the deadline; resolves with what was seen. */
function receive(
  socket: Socket,
  bytes: number,
  deadline: number,
): Promise<{ digest: string; bytes: number; firstMs: number; lastMs: number; finished: boolean }> {
  return new Promise((resolve) => {
    const hash = createHash('sha256');
    let received = 0;
    let firstMs = 0;
    let lastMs = 0;
    const done = (finished: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ digest: hash.digest('hex'), bytes: received, firstMs, lastMs, finished });
    };
    const timer = setTimeout(() => done(false), Math.max(0, deadline - now()));
    // Investigation aid: MiB received per second on stderr.
    let traced = 0;
    const trace = process.env.PAM_WAN_TRACE
      ? setInterval(() => {
          process.stderr.write(`${((received - traced) / mib).toFixed(2)} `);
          traced = received;
        }, 1000)
      : undefined;
    socket.once('close', () => clearInterval(trace));
    socket.on('data', (chunk: Buffer) => {
      if (received === 0) firstMs = now();
      received += chunk.length;
      lastMs = now();
      hash.update(chunk);
      if (received >= bytes) done(true);
    });
    socket.on('end', () => done(received >= bytes));
    socket.on('error', () => done(false));
  });
}

async function main(argv: string[]): Promise<void> {
  const [mode, ...args] = argv;
  if (mode === 'serve') {
    const [host, port, mibs, seed] = args as [string, string, string, string];
    const server = createServer({ allowHalfOpen: true }, (socket) => {
      socket.on('error', () => undefined);
      socket.setNoDelay(true);
      // The first byte says what the peer wants: 'U' uploads (we hash and answer the digest), else we send.
      socket.once('data', (first: Buffer) => {
        if (first[0] === 'U'.charCodeAt(0)) {
          const hash = createHash('sha256').update(first.subarray(1));
          socket.on('data', (chunk: Buffer) => hash.update(chunk));
          socket.on('end', () => socket.end(`${hash.digest('hex')}\n`));
        } else void send(socket, Number(mibs), seed);
      });
    });
    server.listen(Number(port), host, () => out({ event: 'listening', port: Number(port) }));
    return;
  }
  if (mode === 'fetch' || mode === 'upload') {
    const [host, port, mibs, seed, seconds] = args as [string, string, string, string, string];
    const bytes = Number(mibs) * mib;
    const expected = expectedDigest(Number(mibs), seed);
    const started = now();
    const deadline = started + Number(seconds) * 1000;
    const socket = connect({ host, port: Number(port), allowHalfOpen: true });
    socket.on('error', () => undefined);
    if (mode === 'fetch') {
      socket.write('F');
      const seen = await receive(socket, bytes, deadline);
      const ok = seen.finished && seen.bytes === bytes && seen.digest === expected;
      out({
        ok,
        finished: seen.finished,
        bytes: seen.bytes,
        seconds: (seen.lastMs - started) / 1000,
        mibps: seen.bytes / mib / ((seen.lastMs - started) / 1000),
      });
    } else {
      socket.write('U');
      const reply: Buffer[] = [];
      socket.on('data', (chunk: Buffer) => reply.push(chunk));
      const answered = new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), Math.max(0, deadline - now()));
        const settle = (value: boolean) => {
          clearTimeout(timer);
          resolve(value);
        };
        socket.on('end', () => settle(true));
        socket.on('close', () => settle(false));
      });
      await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
      void send(socket, Number(mibs), seed);
      const finished = await answered;
      const elapsed = (now() - started) / 1000;
      const ok = finished && Buffer.concat(reply).toString().trim() === expected;
      out({
        ok,
        finished,
        bytes: finished ? bytes : socket.bytesWritten,
        seconds: elapsed,
        mibps: (finished ? bytes : socket.bytesWritten) / mib / elapsed,
      });
      socket.destroy();
    }
    return;
  }
  if (mode === 'udp-echo') {
    const [host, port] = args as [string, string];
    const socket = createSocket('udp4');
    socket.on('message', (message, peer) => socket.send(message, peer.port, peer.address));
    socket.bind(Number(port), host, () => out({ event: 'listening' }));
    return;
  }
  if (mode === 'udp-ping') {
    const [host, port, count] = args as [string, string, string];
    const socket = createSocket('udp4');
    const times: number[] = [];
    for (let i = 0; i < Number(count); i += 1) {
      const started = now();
      const answered = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), 2000);
        socket.once('message', () => {
          clearTimeout(timer);
          resolve(true);
        });
        socket.send(Buffer.from(String(i)), Number(port), host);
      });
      if (answered) times.push(now() - started);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    socket.close();
    times.sort((a, b) => a - b);
    out({ received: times.length, medianMs: times[Math.floor(times.length / 2)] ?? NaN, minMs: times[0] ?? NaN });
    return;
  }
  if (mode === 'ready') {
    const [port, seconds, separator, command, ...rest] = args as [string, string, string, string, ...string[]];
    if (separator !== '--') throw new Error('usage: ready PORT SECONDS -- CMD ARGS…');
    const started = now();
    const startedAt = Date.now();
    const deadline = started + Number(seconds) * 1000;
    const child = spawn(command, rest, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const closed = new Promise((resolve) => child.once('close', resolve));
    const code = await new Promise<number>((resolve) => child.once('exit', (exitCode) => resolve(exitCode ?? 1)));
    const readyMs = now() - started;
    // `ssh -f` leaves a child holding our pipes, so they may never close. A known port is tried at
    // once (waiting for the pipes would add their wait to ssh's time); port 0 means the command prints
    // the port (`pam … --json`), which is complete once its pipes close (bounded: 1 s).
    if (Number(port) === 0 || code !== 0) await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, 1000))]);
    child.stdout.destroy();
    child.stderr.destroy();
    if (code !== 0) return out({ ok: false, code, stderr: stderr.slice(-500) });
    const printed = /"port":(\d+)/.exec(stdout);
    const localPort = printed ? Number(printed[1]) : Number(port);
    for (;;) {
      const socket = connect({ host: '127.0.0.1', port: localPort });
      socket.on('error', () => undefined);
      socket.write('F');
      const seen = await receive(socket, 1, Math.min(deadline, now() + 5000));
      if (seen.bytes > 0) return out({ ok: true, startedAt, readyMs, usableMs: seen.firstMs - started, stdout: stdout.trim() });
      if (now() > deadline) return out({ ok: false, readyMs, stdout: stdout.trim() });
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }
  throw new Error(`unknown mode ${mode}`);
}

main(process.argv.slice(2)).catch((error: unknown) => {
  process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
