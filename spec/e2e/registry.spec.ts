// The cross-process registry as operators use it: `list` and `stop` from other processes, owners that
// die hard, forged entries, unsafe registry directories, and many owners writing at once.

import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { skipBecause } from '../support/tap.js';
import {
  backgroundTunnel,
  echoServer,
  isAlive,
  pam,
  portIsOpen,
  roundTrip,
  scratchDir,
  startGatewayProc,
  tunnelEnv,
  until,
  type Teardownable,
} from '../support/processes.js';

const token = 'registry-token-0d9e';

async function setup(t: Teardownable) {
  const dir = scratchDir(t);
  const echo = await echoServer(t);
  const gateway = await startGatewayProc(t, dir, token, { echo: echo.port, web: echo.port });
  const env = tunnelEnv(dir, token, gateway.url);
  const registry = join(dir, 'registry');
  const entries = () => (existsSync(registry) ? readdirSync(registry).filter((name) => /^\d+\.json$/.test(name)) : []);
  return { dir, gateway, env, registry, entries };
}

interface Listed {
  id: string;
  target: string;
  host: string;
  port: number;
  pid: number;
  mode: string;
  state: string;
}

async function list(t: Teardownable, env: NodeJS.ProcessEnv): Promise<Listed[]> {
  const proc = pam(t, ['tunnel', 'list', '--json'], { env });
  if ((await proc.exited) !== 0) throw new Error(`list failed: ${proc.stderr}`);
  return JSON.parse(proc.stdout) as Listed[];
}

t.test('list and stop from other processes; a kill -9 owner disappears; ambiguity and misses', async (t) => {
  const { env, entries, registry } = await setup(t);
  const [a, b] = await Promise.all([backgroundTunnel(t, env, 'echo'), backgroundTunnel(t, env, 'web')]);
  const listed = await list(t, env);
  t.same(
    listed.map(({ id, pid, port, target, state, mode }) => ({ id, pid, port, target, state, mode })).sort((x, y) => x.pid - y.pid),
    [a, b]
      .map(({ id, pid, port }, index) => ({ id, pid, port, target: index === 0 ? 'echo' : 'web', state: 'ready', mode: 'background' }))
      .sort((x, y) => x.pid - y.pid),
    'list --json shows both tunnels with their ports and owners',
  );
  const table = pam(t, ['tunnel', 'list'], { env });
  t.equal(await table.exited, 0);
  t.match(table.stdout, /^ID\s+TARGET\s+LOCAL\s+PID\s+MODE\s+STATE\s+UPTIME\s+RECONNECTS\s+PATH\n/, 'no TTY: a plain table');
  t.notOk(table.stdout.includes('\u001b['), 'without colour');

  process.kill(a.pid, 'SIGKILL');
  await until(() => !isAlive(a.pid), 5_000, 'owner death');
  t.same(
    (await list(t, env)).map((row) => row.id),
    [b.id],
    'the dead owner is no longer listed',
  );
  t.notOk(existsSync(join(registry, `${a.pid}.json`)), 'and its stale file is gone');

  const c = await backgroundTunnel(t, env, 'web');
  const ambiguous = pam(t, ['tunnel', 'stop', 'web'], { env });
  t.equal(await ambiguous.exited, 2, 'two tunnels to web: ambiguous');
  t.match(ambiguous.stderr, new RegExp(`${b.id}[\\s\\S]*${c.id}|${c.id}[\\s\\S]*${b.id}`), 'the candidates are listed');
  const miss = pam(t, ['tunnel', 'stop', 'nothing-matches'], { env });
  t.equal(await miss.exited, 1);
  t.match(miss.stderr, /no running tunnel matches 'nothing-matches'/);

  const one = pam(t, ['tunnel', 'stop', b.id.slice(0, 5)], { env });
  t.equal(await one.exited, 0, `stop by id prefix: ${one.stderr}`);
  t.notOk(isAlive(b.pid), 'that owner exited');
  t.equal(
    Buffer.compare(await roundTrip(c.port, Buffer.from('still up')), Buffer.from('still up')),
    0,
    'the other tunnel still carries bytes',
  );

  const all = pam(t, ['tunnel', 'stop', '--all', '--json'], { env });
  t.equal(await all.exited, 0, all.stderr);
  t.match(JSON.parse(all.stdout), [{ id: c.id, stopped: true }]);
  t.notOk(isAlive(c.pid));
  t.notOk(await portIsOpen(c.port), 'its port is closed');
  t.same(entries(), [], 'nothing left in the registry');
});

t.test('a forged entry naming a live unrelated process is never signalled', async (t) => {
  const { env, registry, entries } = await setup(t);
  mkdirSync(registry, { recursive: true, mode: 0o700 });
  const sleeper = spawn('sleep', ['30'], { stdio: 'ignore' });
  t.teardown(() => sleeper.kill('SIGKILL'));
  const pid = sleeper.pid!;
  const tunnel = {
    id: 'deadbeef',
    target: 'echo',
    gateway: 'http://127.0.0.1:1',
    host: '127.0.0.1',
    port: 1,
    mode: 'background',
    state: 'ready',
    reconnects: 0,
    startedAt: new Date().toISOString(),
  };
  writeFileSync(join(registry, `${pid}.json`), JSON.stringify({ schema: 1, pid, startTime: '1', hostname: 'x', tunnels: [tunnel] }), {
    mode: 0o600,
  });
  const stop = pam(t, ['tunnel', 'stop', '--all'], { env });
  t.equal(await stop.exited, 0);
  t.match(stop.stderr, /no tunnels running/);
  t.ok(isAlive(pid), 'the sleep with a wrong start time is still alive');
  t.same(entries(), [], 'the forged stale entry was removed');

  const { startTime: _drop, ...missing } = { schema: 1, pid, startTime: '', hostname: 'x', tunnels: [tunnel] };
  writeFileSync(join(registry, `${pid}.json`), JSON.stringify(missing), { mode: 0o600 });
  const again = pam(t, ['tunnel', 'stop', 'deadbeef'], { env });
  t.equal(await again.exited, 1, 'an entry without a start time matches nothing');
  t.ok(isAlive(pid), 'the sleep is still alive');
});

t.test('an unsafe registry directory is refused with exit 78', async (t) => {
  const dir = scratchDir(t);
  const real = join(dir, 'real');
  mkdirSync(real, { mode: 0o700 });
  const link = join(dir, 'link');
  symlinkSync(real, link);
  const viaLink = pam(t, ['tunnel', 'list'], { env: { PAM_TUNNEL_REGISTRY: link } });
  t.equal(await viaLink.exited, 78, 'a symlink');
  t.match(viaLink.stderr, /symlink/);
  for (const spelling of [`${link}/`, `${link}/.`, join(link, 'sub')]) {
    const start = pam(t, ['tunnel', 'start', 'echo', '-R', 'true', '--gateway', 'http://127.0.0.1:9'], {
      env: { PAM_TUNNEL_REGISTRY: spelling, PAM_GATEWAY_TOKEN: token },
    });
    t.equal(await start.exited, 78, `${spelling} is refused like the link itself`);
    t.match(start.stderr, /symlink/);
  }
  t.same(readdirSync(real), [], 'nothing was written through the link');
  const relative = pam(t, ['tunnel', 'list'], { env: { PAM_TUNNEL_REGISTRY: 'registry' } });
  t.equal(await relative.exited, 78, 'a relative registry path');
  t.match(relative.stderr, /relative path: set PAM_TUNNEL_REGISTRY to an absolute path/);

  const open = join(dir, 'open');
  mkdirSync(open);
  chmodSync(open, 0o777);
  const worldWritable = pam(t, ['tunnel', 'list'], { env: { PAM_TUNNEL_REGISTRY: open } });
  t.equal(await worldWritable.exited, 78, 'world-writable');
  t.match(worldWritable.stderr, /writable/);

  if (process.getuid?.() !== 0) {
    skipBecause(t, 'not root: cannot chown a directory to another uid to simulate a foreign owner');
    return;
  }
  const foreign = join(dir, 'foreign');
  mkdirSync(foreign, { mode: 0o700 });
  chownSync(foreign, 65534, 65534);
  const foreignOwned = pam(t, ['tunnel', 'list'], { env: { PAM_TUNNEL_REGISTRY: foreign } });
  t.equal(await foreignOwned.exited, 78, 'owned by another uid');
  t.match(foreignOwned.stderr, /owned by/);
});

t.test('a port held by a live tunnel is refused with 75 before any signalling', async (t) => {
  const { env, gateway } = await setup(t);
  const held = await backgroundTunnel(t, env, 'echo');
  const before = ((await (await fetch(`${gateway.url}/healthz`)).json()) as { signallingRequests: number }).signallingRequests;
  const second = pam(t, ['tunnel', 'start', 'web', '--port', String(held.port), '-R', 'true'], { env });
  t.equal(await second.exited, 75);
  t.match(second.stderr, new RegExp(`held by tunnel ${held.id}`));
  const after = ((await (await fetch(`${gateway.url}/healthz`)).json()) as { signallingRequests: number }).signallingRequests;
  t.equal(after, before, 'the gateway saw no signalling request');
  process.kill(held.pid, 'SIGTERM');
  await until(() => !isAlive(held.pid), 5_000, 'owner exit');
});

t.test('20 owners starting at once: every entry parseable at every moment, 20 distinct ports', async (t) => {
  const { env, registry, entries } = await setup(t);
  let reads = 0;
  const torn: string[] = [];
  let polling = true;
  const poller = (async () => {
    while (polling) {
      for (const name of entries()) {
        try {
          JSON.parse(readFileSync(join(registry, name), 'utf8'));
          reads += 1;
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code !== 'ENOENT') torn.push(`${name}: ${String(error)}`);
        }
      }
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  })();
  const tunnels = Array.from({ length: 20 }, () => pam(t, ['tunnel', 'start', 'echo', '-fg', '--json', '--timeout', '60'], { env }));
  let ready: Array<Record<string, unknown>>;
  try {
    ready = await Promise.all(tunnels.map((tunnel) => tunnel.event('ready', 90_000)));
  } finally {
    polling = false;
    await poller;
  }
  t.equal(new Set(ready.map((line) => line.port)).size, 20, '20 distinct ports');
  t.equal(entries().length, 20, '20 registry entries');
  t.same(torn, [], `no torn entry in ${reads} reads`);
  for (const tunnel of tunnels) tunnel.child.kill('SIGTERM');
  t.same(await Promise.all(tunnels.map((tunnel) => tunnel.exited)), Array(20).fill(0), 'all stop with 0');
  t.same(entries(), [], 'and leave nothing behind');
});

t.test('stop waits, reports a tunnel that will not go (1), and --force kills it and cleans up', async (t) => {
  const { env, entries, dir } = await setup(t);
  const pidFile = join(dir, 'stuck.pid');
  const launcher = pam(t, ['tunnel', 'start', 'echo', '-bg', '--json', '--pid-file', pidFile], { env });
  t.equal(await launcher.exited, 0, launcher.stderr);
  const stuck = JSON.parse(launcher.stdout) as { id: string; pid: number; port: number };
  t.teardown(() => {
    if (isAlive(stuck.pid)) process.kill(stuck.pid, 'SIGKILL');
  });
  process.kill(stuck.pid, 'SIGSTOP'); // a hung owner: SIGTERM stays pending
  const patient = pam(t, ['tunnel', 'stop', stuck.id, '--wait', '1'], { env });
  t.equal(await patient.exited, 1, 'still running after --wait → 1');
  t.match(patient.stderr, new RegExp(`could not stop tunnel ${stuck.id}`));
  t.ok(isAlive(stuck.pid), 'not killed without --force');
  const forced = pam(t, ['tunnel', 'stop', stuck.id, '--wait', '1', '--force', '--json'], { env });
  t.equal(await forced.exited, 0, forced.stderr);
  t.match(JSON.parse(forced.stdout), [{ id: stuck.id, stopped: true, forced: true }]);
  await until(() => !isAlive(stuck.pid), 5_000, 'owner killed');
  t.same(entries(), [], 'its registry entry is gone');
  t.notOk(existsSync(pidFile), 'its pid file is gone');
  t.notOk(await portIsOpen(stuck.port), 'its port is closed');
});

t.test('an empty or blank selector is a usage error (2) for stop, history, replay and completion, and stops nothing', async (t) => {
  const { env } = await setup(t);
  const running = await backgroundTunnel(t, env, 'echo');
  for (const args of [
    ['tunnel', 'stop', ''],
    ['tunnel', 'stop', '   '],
    ['tunnel', 'stop', '\t'],
    ['tunnel', 'history', ''],
    ['tunnel', 'history', ' '],
    ['tunnel', 'replay', ''],
    ['tunnel', 'replay', '  '],
    ['completion', ''],
    ['completion', 'constructor'],
  ]) {
    const proc = pam(t, args, { env });
    t.equal(await proc.exited, 2, `${JSON.stringify(args)} exits 2: ${proc.stderr}`);
    t.match(proc.stderr, /^pam: .*(empty|name a shell)/m, 'one line naming the fix');
    t.notMatch(proc.stderr, /^\s+at /m, 'no stack trace');
  }
  t.ok(isAlive(running.pid), 'the running tunnel was not stopped');
  t.same(
    (await list(t, env)).map((row) => row.id),
    [running.id],
    'and is still listed',
  );
});

t.test("list leaves files that are not pam's alone, shows Commander's live entry as foreign, and stop never touches it", async (t) => {
  const { env, registry } = await setup(t);
  const ours = await backgroundTunnel(t, env, 'echo');
  const commander = spawn('sleep', ['60'], { stdio: 'ignore' });
  t.teardown(() => commander.kill('SIGKILL'));
  await new Promise((resolve) => commander.once('spawn', resolve));
  const commanderPid = commander.pid!;
  const foreignFiles: Record<string, string> = {
    '2023.json': '{"year": 2023}',
    '.notes.tmp': 'my notes',
    [`${commanderPid}.json`]: JSON.stringify({
      pid: commanderPid,
      record_uid: 'rec-1',
      host: '127.0.0.1',
      port: 15432,
      mode: 'foreground',
    }),
  };
  const old = new Date(Date.now() - 3_600_000);
  for (const [name, text] of Object.entries(foreignFiles)) {
    writeFileSync(join(registry, name), text, { mode: 0o600 });
    utimesSync(join(registry, name), old, old);
  }
  const snapshot = () =>
    Object.keys(foreignFiles).map((name) => (existsSync(join(registry, name)) ? readFileSync(join(registry, name), 'utf8') : null));
  const before = snapshot();

  const listed = (await list(t, env)) as Array<Listed & { foreign: boolean; logFile: string | null }>;
  t.match(
    listed,
    [
      { id: ours.id, pid: ours.pid, foreign: false },
      { id: null, pid: commanderPid, host: '127.0.0.1', port: 15432, mode: 'foreground', target: 'rec-1', state: null, foreign: true },
    ],
    'ours, then the foreign live entry, marked foreign',
  );
  const table = pam(t, ['tunnel', 'list'], { env });
  t.equal(await table.exited, 0);
  t.match(
    table.stdout,
    new RegExp(`^-\\s+rec-1\\s+127\\.0\\.0\\.1:15432\\s+${commanderPid}\\s+foreground\\s+foreign\\s`, 'm'),
    'the table marks it foreign',
  );

  const byPid = pam(t, ['tunnel', 'stop', String(commanderPid)], { env });
  t.equal(await byPid.exited, 1, 'stop by its pid matches no pam tunnel');
  t.match(byPid.stderr, /another program's tunnel/);
  const all = pam(t, ['tunnel', 'stop', '--all', '--json'], { env });
  t.equal(await all.exited, 0, all.stderr);
  t.match(JSON.parse(all.stdout), [{ id: ours.id, stopped: true }], 'stop --all stops only ours');
  t.ok(isAlive(commanderPid), 'the foreign owner was never signalled');
  t.same(snapshot(), before, 'every foreign file is still there, unchanged');
});

t.test('-bg --json: success prints the row list --json shows, failure one JSON object, and the log holds JSON lines only', async (t) => {
  const { env } = await setup(t);
  const launcher = pam(t, ['tunnel', 'start', 'echo', '-bg', '--json'], { env });
  t.equal(await launcher.exited, 0, launcher.stderr);
  const launched = JSON.parse(launcher.stdout) as Record<string, unknown> & { pid: number; logFile: string };
  t.teardown(() => {
    if (isAlive(launched.pid)) process.kill(launched.pid, 'SIGKILL');
  });
  const [row] = (await list(t, env)) as unknown as Array<Record<string, unknown>>;
  t.same(Object.keys(launched).sort(), Object.keys(row!).sort(), 'the same fields as list --json');
  const { uptimeSeconds: _a, ...stable } = launched;
  const { uptimeSeconds: _b, ...listedStable } = row!;
  t.same(stable, listedStable, 'with the same values');
  t.match(launched.logFile, /\/logs\/[0-9a-f]{8}\.log$/, 'logFile shown in both');

  const failing = pam(t, ['tunnel', 'start', 'echo', '-bg', '--json'], { env: { ...env, PAM_TRANSPORT: 'carrier-pigeon' } });
  t.equal(await failing.exited, 2, failing.stderr);
  const lines = failing.stdout.split('\n').filter(Boolean);
  t.equal(lines.length, 1, `one JSON object on stdout: ${failing.stdout}`);
  const failure = JSON.parse(lines[0]!) as { event: string; exitCode: number; reason: string; logFile: string | null };
  t.match(failure, { event: 'stopped', exitCode: 2, reason: /carrier-pigeon/ });
  for (const logFile of [launched.logFile, failure.logFile].filter((path): path is string => path !== null)) {
    const logLines = readFileSync(logFile, 'utf8').split('\n').filter(Boolean);
    t.ok(logLines.length > 0, `${logFile} is not empty`);
    t.same(
      logLines.filter((line) => {
        try {
          return typeof JSON.parse(line) !== 'object';
        } catch {
          return true;
        }
      }),
      [],
      `${logFile} holds JSON lines only`,
    );
  }
});

t.test('-bg on a full disk exits 73 like --run, and says why', async (t) => {
  if (process.getuid?.() !== 0 && process.env.CI !== 'true') {
    skipBecause(t, 'not root: cannot mount a tiny tmpfs to stand for a full disk');
    return;
  }
  const { env, dir } = await setup(t);
  const disk = join(dir, 'full-disk');
  mkdirSync(disk, { mode: 0o700 });
  const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=256k,mode=0700', 'tmpfs', disk], { encoding: 'utf8' });
  t.equal(mounted.status, 0, `mount a 256 KiB tmpfs: ${mounted.stderr}`);
  t.teardown(() => void spawnSync('umount', [disk]));
  const registry = join(disk, 'registry');
  mkdirSync(join(registry, 'logs'), { recursive: true, mode: 0o700 });
  try {
    writeFileSync(join(disk, 'fill'), Buffer.alloc(1024 * 1024));
  } catch (error) {
    t.equal((error as NodeJS.ErrnoException).code, 'ENOSPC', 'the disk is now full');
  }
  const fullEnv = { ...env, PAM_TUNNEL_REGISTRY: registry };
  const run = pam(t, ['tunnel', 'start', 'echo', '-R', 'true'], { env: fullEnv });
  t.equal(await run.exited, 73, `--run: ${run.stderr}`);
  const background = pam(t, ['tunnel', 'start', 'echo', '-bg', '--json'], { env: fullEnv });
  t.equal(await background.exited, 73, `-bg exits 73 too: ${background.stderr}`);
  t.match(background.stderr, /could not be written|cannot (write|create)/, 'and the line says what could not be written');
  t.match(JSON.parse(background.stdout), { event: 'stopped', exitCode: 73, kind: 'registryWrite' });
  t.same(
    readdirSync(registry).filter((name) => name.endsWith('.json')),
    [],
    'no registry entry left',
  );
});
