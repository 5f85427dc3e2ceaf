// `npm run bench`: what pam-tunnel costs on this machine, measured, not asserted. Prints a table
// (and `--json`). Everything runs on 127.0.0.1; every loop is bounded in count and time.
//   startup   — `pam --help`, `pam tunnel list --json` with 0 and 100 live entries, vs node and the WebRTC imports
//   connect   — spawn → ready line of a foreground tunnel, p50/p95 over 20
//   latency   — round trip of a 1-byte message, direct vs through the tunnel, p50/p99 over 500
//   bulk      — MiB/s of a sha256-checked upload: direct TCP, a plain Node relay, a pam tunnel
//   fan-out   — 1,000 concurrent connections × 64 KiB echoed, all verified
//   memory    — RSS of an idle tunnel; growth while a 1 MiB/s reader drains a fast sender; peak after bulk
//   scale-out — exchanges/s through one broker and two over Redis; failover time (bench/scale-out.ts)
// Default transport (native) first, then connect, bulk and slow-reader figures for --transport werift.
// `--only startup,data,scale-out` runs just those parts (e.g. `npm run bench -- --only scale-out`).

import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { openFsRegistry } from '../adapters/fs-registry.js';
import { processStartTime } from '../adapters/process-identity.js';
import { pam, pamBin, scratchDir, startGatewayProc, tunnelEnv, type Teardownable } from '../spec/support/processes.js';
import { scaleOut } from './scale-out.js';

const json = process.argv.includes('--json');
const parts = ['startup', 'data', 'scale-out'] as const;
const onlyAt = process.argv.indexOf('--only');
const only = onlyAt >= 0 ? (process.argv[onlyAt + 1] ?? '').split(',') : [...parts];
const unknownPart = only.find((part) => !(parts as readonly string[]).includes(part));
if (unknownPart !== undefined) {
  process.stderr.write(`bench: --only takes ${parts.join(', ')} (comma-separated), not '${unknownPart}'\n`);
  process.exit(2);
}
const bulkMiB = Number(process.env.PAM_BENCH_MIB ?? 256);
const cleanups: Array<() => unknown> = [];
const scope: Teardownable = { teardown: (fn) => void cleanups.push(fn) };
const rows: Array<{ name: string; value: number; unit: string; note?: string }> = [];
const record = (name: string, value: number, unit: string, note?: string) => {
  // Small values keep two decimals (sub-millisecond round trips), larger ones one.
  const rounded = value < 10 ? Math.round(value * 100) / 100 : Math.round(value * 10) / 10;
  rows.push({ name, value: rounded, unit, ...(note ? { note } : {}) });
  if (!json) process.stderr.write(`  ${name}: ${rounded} ${unit}${note ? ` (${note})` : ''}\n`);
};
const median = (values: number[]) => percentile(values, 50);
const percentile = (values: number[], p: number) =>
  [...values].sort((a, b) => a - b)[Math.min(values.length - 1, Math.floor((values.length * p) / 100))]!;
const rssMiB = (pid: number) => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function wallMs(command: string, args: string[], env: NodeJS.ProcessEnv = {}, runs = 10): number {
  const times: number[] = [];
  for (let i = 0; i < runs; i += 1) {
    const started = process.hrtime.bigint();
    const result = spawnSync(command, args, { env: { ...process.env, CI: 'true', ...env }, stdio: 'ignore' });
    if (result.status !== 0) throw new Error(`${command} ${args.join(' ')} exited ${result.status}`);
    times.push(Number(process.hrtime.bigint() - started) / 1e6);
  }
  return median(times);
}

async function startup(): Promise<void> {
  const dir = scratchDir(scope, 'pam-bench-');
  const registry = join(dir, 'registry');
  record('node -e 0', wallMs(process.execPath, ['-e', '0']), 'ms', 'median of 10');
  record("node + import('werift')", wallMs(process.execPath, ['--input-type=module', '-e', "await import('werift')"]), 'ms');
  record(
    "node + import('node-datachannel')",
    wallMs(process.execPath, ['--input-type=module', '-e', "await import('node-datachannel')"]),
    'ms',
  );
  record('pam --help', wallMs(process.execPath, [pamBin, '--help']), 'ms');
  record(
    'pam tunnel list --json (empty)',
    wallMs(process.execPath, [pamBin, 'tunnel', 'list', '--json'], { PAM_TUNNEL_REGISTRY: registry }),
    'ms',
  );
  // 100 live owners: real processes (sleep), each with an entry carrying its real start time.
  const sleepers = Array.from({ length: 100 }, () => spawn('sleep', ['300'], { stdio: 'ignore' }));
  scope.teardown(() => {
    for (const sleeper of sleepers) sleeper.kill('SIGKILL');
  });
  await Promise.all(sleepers.map((sleeper) => new Promise((resolve) => sleeper.once('spawn', resolve))));
  await Promise.all(
    sleepers.map(async (sleeper, index) => {
      const owner = await openFsRegistry({ env: {}, dir: registry, pid: sleeper.pid!, startTime: (await processStartTime(sleeper.pid!))! });
      await owner.put({
        id: index.toString(16).padStart(8, '0'),
        target: 'db',
        gateway: 'http://127.0.0.1:8765',
        host: '127.0.0.1',
        port: 20000 + index,
        mode: 'background',
        state: 'ready',
        reconnects: 0,
        startedAt: new Date().toISOString(),
      });
    }),
  );
  const listed = JSON.parse(
    spawnSync(process.execPath, [pamBin, 'tunnel', 'list', '--json'], {
      env: { ...process.env, PAM_TUNNEL_REGISTRY: registry },
      encoding: 'utf8',
    }).stdout,
  ) as unknown[];
  if (listed.length !== 100) throw new Error(`expected 100 listed tunnels, got ${listed.length}`);
  record(
    'pam tunnel list --json (100 live entries)',
    wallMs(process.execPath, [pamBin, 'tunnel', 'list', '--json'], { PAM_TUNNEL_REGISTRY: registry }),
    'ms',
    'target ≤ 120',
  );
  for (const sleeper of sleepers) sleeper.kill('SIGKILL');
}

/** A target that hashes everything it receives and reports digest + bytes when the sender ends. */
async function hashingSink(): Promise<{ port: number; next(): Promise<{ digest: string; bytes: number; at: bigint }> }> {
  const results: Array<(value: { digest: string; bytes: number; at: bigint }) => void> = [];
  const server: Server = createServer({ allowHalfOpen: true }, (socket) => {
    const hash = createHash('sha256');
    let bytes = 0;
    socket.on('data', (chunk: Buffer) => {
      hash.update(chunk);
      bytes += chunk.length;
    });
    socket.on('end', () => {
      results.shift()?.({ digest: hash.digest('hex'), bytes, at: process.hrtime.bigint() });
      socket.end();
    });
    socket.on('error', () => undefined);
  });
  scope.teardown(() => server.close());
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as AddressInfo).port, next: () => new Promise((resolve) => results.push(resolve)) };
}

/** Upload `mib` MiB to port, wait for the sink's digest, check it, return MiB/s. */
async function upload(port: number, sink: Awaited<ReturnType<typeof hashingSink>>, mib: number): Promise<number> {
  const block = randomBytes(1024 * 1024);
  const expected = createHash('sha256');
  for (let i = 0; i < mib; i += 1) expected.update(block);
  const received = sink.next();
  const started = process.hrtime.bigint();
  const socket: Socket = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  socket.on('error', () => undefined);
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  for (let i = 0; i < mib; i += 1) {
    if (!socket.write(block)) await new Promise((resolve) => socket.once('drain', resolve));
  }
  socket.end();
  const result = await Promise.race([
    received,
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error('bulk transfer took over 10 minutes')), 600_000).unref()),
  ]);
  socket.destroy();
  if (result.bytes !== mib * 1024 * 1024 || result.digest !== expected.digest('hex'))
    throw new Error(`bulk transfer corrupted: ${result.bytes} bytes`);
  return mib / (Number(result.at - started) / 1e9);
}

async function relay(targetPort: number): Promise<number> {
  const server = createServer({ allowHalfOpen: true }, (client) => {
    const upstream = connect({ port: targetPort, host: '127.0.0.1', allowHalfOpen: true });
    client.pipe(upstream).pipe(client);
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
  });
  scope.teardown(() => server.close());
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

async function dataPath(): Promise<void> {
  const dir = scratchDir(scope, 'pam-bench-');
  const sink = await hashingSink();
  const gateway = await startGatewayProc(scope, dir, 'bench-token-0a1b2c3d', { sink: sink.port });
  const env = tunnelEnv(dir, 'bench-token-0a1b2c3d', gateway.url);
  await connectTimes(env, '');

  const echo = await echoTarget();
  const echoGateway = await startGatewayProc(scope, dir, 'bench-token-0a1b2c3d', { echo: echo });
  const echoEnv = tunnelEnv(dir, 'bench-token-0a1b2c3d', echoGateway.url);
  const echoTunnel = pam(scope, ['tunnel', 'start', 'echo', '-fg', '--json'], { env: echoEnv });
  const echoPort = Number((await echoTunnel.event('ready', 60_000)).port);
  const direct1 = await pingPong(echo, 500);
  const tunnelled1 = await pingPong(echoPort, 500);
  record('round trip 1 byte, direct p50', percentile(direct1, 50), 'ms');
  record(
    'round trip 1 byte, tunnel p50',
    percentile(tunnelled1, 50),
    'ms',
    `added ${(percentile(tunnelled1, 50) - percentile(direct1, 50)).toFixed(2)} ms; target ≤ 1`,
  );
  record('round trip 1 byte, tunnel p99', percentile(tunnelled1, 99), 'ms');
  const fanStarted = Date.now();
  const verified = await fanOut(echoPort, 1000, 64 * 1024);
  record('1,000 concurrent connections × 64 KiB echoed', Date.now() - fanStarted, 'ms', `${verified}/1000 verified`);
  echoTunnel.child.kill('SIGTERM');
  await echoTunnel.exited;

  const slowGrowth = await slowReader(dir, 20, {});
  record(
    'RSS growth, 1 MiB/s reader vs fast sender (20 s)',
    slowGrowth.tunnel,
    'MiB',
    `tunnel process; gateway ${slowGrowth.gateway.toFixed(1)} MiB; target ≤ 16`,
  );

  const direct = await upload(sink.port, sink, bulkMiB);
  record(`bulk ${bulkMiB} MiB: direct TCP`, direct, 'MiB/s');
  const relayed = await upload(await relay(sink.port), sink, bulkMiB);
  record(`bulk ${bulkMiB} MiB: plain Node TCP relay`, relayed, 'MiB/s');
  await tunnelBulk(env, sink, relayed, {
    rate: `bulk ${bulkMiB} MiB: pam tunnel`,
    note: '; target ≥ 100 MiB/s and ≥ 25%',
    peak: 'tunnel process peak RSS after bulk',
  });

  // The same through --transport werift (pure TypeScript) on both ends.
  const weriftGateway = await startGatewayProc(scope, dir, 'bench-token-0a1b2c3d', { sink: sink.port }, ['--transport', 'werift']);
  const weriftEnv = { ...tunnelEnv(dir, 'bench-token-0a1b2c3d', weriftGateway.url), PAM_TRANSPORT: 'werift' };
  await connectTimes(weriftEnv, 'werift: ');
  await tunnelBulk(weriftEnv, sink, relayed, { rate: `werift: bulk ${bulkMiB} MiB through a pam tunnel` });
  const weriftSlow = await slowReader(dir, 20, weriftEnv, ['--transport', 'werift']);
  record(
    'werift: RSS growth, 1 MiB/s reader vs fast sender (20 s)',
    weriftSlow.tunnel,
    'MiB',
    `tunnel process; gateway ${weriftSlow.gateway.toFixed(1)} MiB`,
  );
}

/** Upload bulkMiB through a fresh foreground tunnel: MiB/s and its share of the relay, optionally peak RSS. */
async function tunnelBulk(
  env: NodeJS.ProcessEnv,
  sink: Awaited<ReturnType<typeof hashingSink>>,
  relayed: number,
  rows: { rate: string; note?: string; peak?: string },
): Promise<void> {
  const tunnel = pam(scope, ['tunnel', 'start', 'sink', '-fg', '--json'], { env });
  const ready = await tunnel.event('ready', 60_000);
  const rate = await upload(Number(ready.port), sink, bulkMiB);
  record(rows.rate, rate, 'MiB/s', `${Math.round((rate / relayed) * 1000) / 10}% of the relay${rows.note ?? ''}`);
  const peak = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${tunnel.pid}/status`, 'utf8'));
  if (peak && rows.peak) record(rows.peak, Number(peak[1]) / 1024, 'MiB');
  tunnel.child.kill('SIGTERM');
  await tunnel.exited;
}

/** Connect 20 foreground tunnels one after another: p50/p95 spawn → ready, and the first one's idle RSS. */
async function connectTimes(env: NodeJS.ProcessEnv, label: string): Promise<void> {
  const connects: number[] = [];
  for (let i = 0; i < 20; i += 1) {
    const started = Date.now();
    const tunnel = pam(scope, ['tunnel', 'start', 'sink', '-fg', '--json'], { env });
    await tunnel.event('ready', 60_000);
    connects.push(Date.now() - started);
    if (i === 0) {
      await sleep(2_000);
      record(`${label}idle tunnel process RSS`, rssMiB(tunnel.pid), 'MiB', 'target ≤ 60');
      const rollup = readFileSync(`/proc/${tunnel.pid}/smaps_rollup`, 'utf8');
      const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(rollup)?.[1] ?? NaN);
      record(
        `${label}idle tunnel process private / proportional memory`,
        (kib('Private_Clean') + kib('Private_Dirty')) / 1024,
        'MiB',
        `PSS ${(kib('Pss') / 1024).toFixed(1)} MiB; the rest of RSS is file pages shared with every node process`,
      );
    }
    tunnel.child.kill('SIGTERM');
    await tunnel.exited;
  }
  record(`${label}connect: spawn → ready, p50`, percentile(connects, 50), 'ms', 'over 20 tunnels; target ≤ 300');
  record(`${label}connect: spawn → ready, p95`, percentile(connects, 95), 'ms');
}

async function echoTarget(): Promise<number> {
  const server = createServer((socket) => {
    socket.on('error', () => undefined);
    socket.pipe(socket);
  });
  scope.teardown(() => server.close());
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

/** Round trips of one byte on one connection, in ms. */
async function pingPong(port: number, count: number): Promise<number[]> {
  const socket = connect({ port, host: '127.0.0.1', noDelay: true });
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  const times: number[] = [];
  for (let i = 0; i < count; i += 1) {
    const started = process.hrtime.bigint();
    const echoed = new Promise((resolve) => socket.once('data', resolve));
    socket.write('x');
    await echoed;
    times.push(Number(process.hrtime.bigint() - started) / 1e6);
  }
  socket.destroy();
  return times;
}

async function fanOut(port: number, connections: number, bytes: number): Promise<number> {
  const results = await Promise.all(
    Array.from({ length: connections }, () => {
      const payload = randomBytes(bytes);
      return new Promise<boolean>((resolve) => {
        const socket = connect(port, '127.0.0.1', () => socket.write(payload));
        const chunks: Buffer[] = [];
        let received = 0;
        socket.on('data', (chunk: Buffer) => {
          chunks.push(chunk);
          received += chunk.length;
          if (received >= bytes) socket.end();
        });
        socket.once('error', () => resolve(false));
        socket.once('close', () => resolve(Buffer.concat(chunks).equals(payload)));
      });
    }),
  );
  return results.filter(Boolean).length;
}

/** RSS growth (MiB) of tunnel and gateway while a target reads 1 MiB/s and the client sends flat out. */
async function slowReader(
  dir: string,
  seconds: number,
  env: NodeJS.ProcessEnv,
  gatewayArgs: readonly string[] = [],
): Promise<{ tunnel: number; gateway: number }> {
  let reader: Socket | undefined;
  const server = createServer((socket) => {
    reader = socket;
    socket.pause();
    socket.on('error', () => undefined);
  });
  scope.teardown(() => {
    reader?.destroy();
    server.close();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const gateway = await startGatewayProc(scope, dir, 'bench-token-0a1b2c3d', { slow: (server.address() as AddressInfo).port }, gatewayArgs);
  const tunnel = pam(scope, ['tunnel', 'start', 'slow', '-fg', '--json'], {
    env: { ...env, ...tunnelEnv(dir, 'bench-token-0a1b2c3d', gateway.url) },
  });
  const port = Number((await tunnel.event('ready', 60_000)).port);
  const sender = connect(port, '127.0.0.1');
  sender.on('error', () => undefined);
  const block = randomBytes(256 * 1024);
  let sending = true;
  const pump = () => {
    while (sending && sender.write(block));
    if (sending) sender.once('drain', pump);
  };
  sender.once('connect', pump);
  let base = { tunnel: 0, gateway: 0 };
  let peak = { tunnel: 0, gateway: 0 };
  for (let tick = 0; tick < seconds * 10; tick += 1) {
    await sleep(100);
    let budget = 100 * 1024;
    let chunk: Buffer | null;
    while (reader && budget > 0 && (chunk = reader.read(Math.min(budget, reader.readableLength || budget)) as Buffer | null))
      budget -= chunk.length;
    if (tick === 30) base = peak = { tunnel: rssMiB(tunnel.pid), gateway: rssMiB(gateway.proc.pid) };
    if (tick > 30 && tick % 10 === 0)
      peak = { tunnel: Math.max(peak.tunnel, rssMiB(tunnel.pid)), gateway: Math.max(peak.gateway, rssMiB(gateway.proc.pid)) };
  }
  sending = false;
  sender.destroy();
  tunnel.child.kill('SIGTERM');
  await tunnel.exited;
  return { tunnel: peak.tunnel - base.tunnel, gateway: peak.gateway - base.gateway };
}

async function main(): Promise<void> {
  if (!json) process.stderr.write(`pam-tunnel bench — node ${process.version}, ${new Date().toISOString()}\n`);
  if (only.includes('startup')) await startup();
  if (only.includes('data')) await dataPath();
  if (only.includes('scale-out')) await scaleOut(scope, record);
  if (json) process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
  else {
    const width = Math.max(...rows.map((row) => row.name.length));
    process.stdout.write(`\n${'measure'.padEnd(width)}  value\n`);
    for (const row of rows)
      process.stdout.write(`${row.name.padEnd(width)}  ${row.value} ${row.unit}${row.note ? `  (${row.note})` : ''}\n`);
  }
}

main()
  .catch((error: unknown) => {
    process.stderr.write(`bench failed: ${error instanceof Error ? error.stack : String(error)}\n`);
    process.exitCode = 1;
  })
  .finally(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
    setTimeout(() => process.exit(), 1000).unref();
  });
