// `npm run bench`: what pam-tunnel costs on this machine, measured, not asserted. Prints a table
// (and `--json`). Everything runs on 127.0.0.1; every loop is bounded in count and time.
//   startup   — `pam --help`, `pam tunnel list --json` with 0 and 100 live entries, vs node and werift's import
//   connect   — spawn → ready line of a foreground tunnel
//   bulk      — MiB/s of a sha256-checked upload: direct TCP, a plain Node relay, a pam tunnel
//   memory    — peak RSS of the tunnel process after the bulk transfer

import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { openFsRegistry } from '../adapters/fs-registry.js';
import { processStartTime } from '../adapters/process-identity.js';
import { pam, pamBin, scratchDir, startGatewayProc, tunnelEnv, type Teardownable } from '../spec/support/processes.js';

const json = process.argv.includes('--json');
const bulkMiB = Number(process.env.PAM_BENCH_MIB ?? 256);
const cleanups: Array<() => unknown> = [];
const scope: Teardownable = { teardown: (fn) => void cleanups.push(fn) };
const rows: Array<{ name: string; value: number; unit: string; note?: string }> = [];
const record = (name: string, value: number, unit: string, note?: string) => {
  rows.push({ name, value: Math.round(value * 10) / 10, unit, ...(note ? { note } : {}) });
  if (!json) process.stderr.write(`  ${name}: ${Math.round(value * 10) / 10} ${unit}${note ? ` (${note})` : ''}\n`);
};
const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

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
  record('pam --help', wallMs(process.execPath, [pamBin, '--help']), 'ms');
  record('pam tunnel list --json (empty)', wallMs(process.execPath, [pamBin, 'tunnel', 'list', '--json'], { PAM_TUNNEL_REGISTRY: registry }), 'ms');
  // 100 live owners: real processes (sleep), each with an entry carrying its real start time.
  const sleepers = Array.from({ length: 100 }, () => spawn('sleep', ['300'], { stdio: 'ignore' }));
  scope.teardown(() => sleepers.forEach((sleeper) => sleeper.kill('SIGKILL')));
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
  const listed = JSON.parse(spawnSync(process.execPath, [pamBin, 'tunnel', 'list', '--json'], { env: { ...process.env, PAM_TUNNEL_REGISTRY: registry }, encoding: 'utf8' }).stdout) as unknown[];
  if (listed.length !== 100) throw new Error(`expected 100 listed tunnels, got ${listed.length}`);
  record('pam tunnel list --json (100 live entries)', wallMs(process.execPath, [pamBin, 'tunnel', 'list', '--json'], { PAM_TUNNEL_REGISTRY: registry }), 'ms', 'target ≤ 120');
  sleepers.forEach((sleeper) => sleeper.kill('SIGKILL'));
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
  const result = await Promise.race([received, new Promise<never>((_, reject) => setTimeout(() => reject(new Error('bulk transfer took over 10 minutes')), 600_000).unref())]);
  socket.destroy();
  if (result.bytes !== mib * 1024 * 1024 || result.digest !== expected.digest('hex')) throw new Error(`bulk transfer corrupted: ${result.bytes} bytes`);
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
  const gateway = await startGatewayProc(scope, dir, 'bench-token', { sink: sink.port });
  const env = tunnelEnv(dir, 'bench-token', gateway.url);
  const connects: number[] = [];
  for (let i = 0; i < 5; i += 1) {
    const started = Date.now();
    const tunnel = pam(scope, ['tunnel', 'start', 'sink', '-fg', '--json'], { env });
    await tunnel.event('ready', 60_000);
    connects.push(Date.now() - started);
    tunnel.child.kill('SIGTERM');
    await tunnel.exited;
  }
  record('connect: spawn → ready (foreground)', median(connects), 'ms', `median of 5, min ${Math.min(...connects)}, max ${Math.max(...connects)}`);

  const direct = await upload(sink.port, sink, bulkMiB);
  record(`bulk ${bulkMiB} MiB: direct TCP`, direct, 'MiB/s');
  const relayed = await upload(await relay(sink.port), sink, bulkMiB);
  record(`bulk ${bulkMiB} MiB: plain Node TCP relay`, relayed, 'MiB/s');
  const tunnel = pam(scope, ['tunnel', 'start', 'sink', '-fg', '--json'], { env });
  const ready = await tunnel.event('ready', 60_000);
  const tunnelled = await upload(Number(ready.port), sink, bulkMiB);
  record(`bulk ${bulkMiB} MiB: pam tunnel`, tunnelled, 'MiB/s', `${Math.round((tunnelled / relayed) * 1000) / 10}% of the relay`);
  const peak = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${tunnel.pid}/status`, 'utf8'));
  if (peak) record('tunnel process peak RSS after bulk', Number(peak[1]) / 1024, 'MiB');
  tunnel.child.kill('SIGTERM');
  await tunnel.exited;
}

async function main(): Promise<void> {
  if (!json) process.stderr.write(`pam-tunnel bench — node ${process.version}, ${new Date().toISOString()}\n`);
  await startup();
  await dataPath();
  if (json) process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
  else {
    const width = Math.max(...rows.map((row) => row.name.length));
    process.stdout.write(`\n${'measure'.padEnd(width)}  value\n`);
    for (const row of rows) process.stdout.write(`${row.name.padEnd(width)}  ${row.value} ${row.unit}${row.note ? `  (${row.note})` : ''}\n`);
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
