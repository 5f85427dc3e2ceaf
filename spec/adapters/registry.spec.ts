// The fs registry and its memory fake through one contract, then what only the disk can get wrong:
// modes, unsafe directories, forged and torn files, concurrent cleaners, and pid files.

import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import t from 'tap';
import { openFsRegistry } from '../../adapters/fs-registry.js';
import { createMemoryRegistry, createMemoryStore } from '../support/memory-registry.js';
import { createPidFiles } from '../../adapters/pid-files.js';
import { processStartTime } from '../../adapters/process-identity.js';
import { failureKinds } from '../../machines/errors.js';
import { record, registryContract } from '../support/contracts/registry.contract.js';
import { scratchDir } from '../support/processes.js';
import type { TapTest } from '../support/tap.js';

/** The pid of a process that has exited (reaped), for entries whose owner is dead. */
function deadPid(): number {
  const child = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  return Number(child.stdout);
}

/** A live process we control, standing for another owner. */
async function liveProcess(t: TapTest): Promise<{ pid: number; startTime: string; kill(): Promise<void> }> {
  const child = spawn('sleep', ['60'], { stdio: 'ignore' });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  t.teardown(() => {
    child.kill('SIGKILL');
    return exited;
  });
  await new Promise<void>((resolve) => child.once('spawn', () => resolve()));
  return {
    pid: child.pid!,
    startTime: (await processStartTime(child.pid!))!,
    async kill() {
      child.kill('SIGKILL');
      await exited;
    },
  };
}

registryContract(t, 'fs registry', async (t) => {
  const dir = join(scratchDir(t), 'registry');
  const env = {};
  const other = await liveProcess(t);
  const doomed = await liveProcess(t);
  const impostorPid = process.ppid;
  return {
    alive: await openFsRegistry({ env, dir }),
    other: await openFsRegistry({ env, dir, pid: other.pid, startTime: other.startTime }),
    doomed: await openFsRegistry({ env, dir, pid: doomed.pid, startTime: doomed.startTime }),
    doomedPid: doomed.pid,
    kill: () => doomed.kill(),
    impostor: await openFsRegistry({ env, dir, pid: impostorPid, startTime: 'not-its-start-time' }),
    impostorPid,
  };
});

registryContract(t, 'memory registry', async () => {
  const store = createMemoryStore();
  const impostor = createMemoryRegistry(store, { pid: 40, startTime: 'boot-old' });
  store.reincarnate(40, 'boot-new');
  return {
    alive: createMemoryRegistry(store, { pid: 10, startTime: 'a' }),
    other: createMemoryRegistry(store, { pid: 20, startTime: 'b' }),
    doomed: createMemoryRegistry(store, { pid: 30, startTime: 'c' }),
    doomedPid: 30,
    kill: async () => store.kill(30),
    impostor,
    impostorPid: 40,
  };
});

t.test('the directory is created 0700 and entry files are 0600, written whole', async (t) => {
  const dir = join(scratchDir(t), 'registry');
  const registry = await openFsRegistry({ env: { PAM_TUNNEL_REGISTRY: dir } });
  t.equal(registry.location, dir, 'PAM_TUNNEL_REGISTRY is honoured');
  t.equal(statSync(dir).mode & 0o777, 0o700);
  await registry.put(record('000000f1', 2001));
  t.equal(statSync(registry.entryPath).mode & 0o777, 0o600);
  const written = JSON.parse(readFileSync(registry.entryPath, 'utf8')) as {
    schema: number;
    pid: number;
    startTime: string;
    tunnels: unknown[];
  };
  t.match(written, { schema: 1, pid: process.pid, startTime: await processStartTime(process.pid) });
  t.equal(written.tunnels.length, 1);
  await registry.remove('000000f1');
  t.notOk(existsSync(registry.entryPath), 'removed with its last tunnel');
  t.same(readdirSync(dir), [], 'no temp file left behind');
});

t.test('unsafe directories are refused with exit code 78', async (t) => {
  const base = scratchDir(t);
  const real = join(base, 'real');
  mkdirSync(real, { mode: 0o700 });
  symlinkSync(real, join(base, 'link'));
  const open = join(base, 'open');
  mkdirSync(open);
  chmodSync(open, 0o775);
  // Relative paths below would land in the working directory if accepted: make that the scratch dir.
  const cwd = process.cwd();
  process.chdir(base);
  t.teardown(() => process.chdir(cwd));
  for (const [dir, problem] of [
    [join(base, 'link'), /is a symlink/],
    [`${join(base, 'link')}/`, /is a symlink/],
    [`${join(base, 'link')}/.`, /is a symlink/],
    [`${join(base, 'link')}//./`, /is a symlink/],
    [join(base, 'link', 'sub'), /goes through the symlink .*link/],
    [`${join(base, 'link')}/../real`, /goes through the symlink .*link/],
    ['relative/registry', /is a relative path: set PAM_TUNNEL_REGISTRY to an absolute path/],
    ['./registry', /is a relative path/],
    [open, /group- or world-writable \(mode 775\)/],
  ] as const) {
    const refused = await openFsRegistry({ env: { PAM_TUNNEL_REGISTRY: dir } }).then(
      () => undefined,
      (error: { kind?: string; message: string }) => error,
    );
    t.equal(refused?.kind, 'unsafeRegistry', dir);
    t.equal(failureKinds.unsafeRegistry.exitCode, 78);
    t.match(refused?.message, problem);
    t.match(refused?.message, /PAM_TUNNEL_REGISTRY/, 'the message names the fix');
  }
  t.same(readdirSync(real), [], 'nothing was created through the link');
  t.notOk(existsSync('relative'), 'nor relative to the working directory');
});

t.test('forged, torn and oversized files never break entries(); only ours by schema and dead are removed', async (t) => {
  const dir = join(scratchDir(t), 'registry');
  const registry = await openFsRegistry({ env: { PAM_TUNNEL_REGISTRY: dir } });
  const live = await liveProcess(t);
  const good = { schema: 1, pid: live.pid, startTime: live.startTime, hostname: 'h', tunnels: [record('000000a1', 3001)] };
  writeFileSync(join(dir, `${live.pid}.json`), JSON.stringify(good));
  const forged: Record<string, string> = {
    garbage: '{"schema":1, "pid": ',
    'wrong schema': JSON.stringify({ ...good, schema: 2 }),
    'pid not the file name': JSON.stringify({ ...good, pid: live.pid + 1 }),
    huge: JSON.stringify({ ...good, hostname: 'x'.repeat(70 * 1024) }),
    'path traversal in pidFile': JSON.stringify({ ...good, tunnels: [record('000000a2', 3002, { pidFile: '../../etc/passwd' })] }),
    'bad id': JSON.stringify({ ...good, tunnels: [record('../../x', 3003)] }),
    'port out of range': JSON.stringify({ ...good, tunnels: [record('000000a3', 70000)] }),
    'unknown mode': JSON.stringify({ ...good, tunnels: [record('000000a4', 3004, { mode: 'daemon' as never })] }),
    'empty start time': JSON.stringify({ ...good, startTime: '' }),
    array: '[]',
  };
  const pids = new Map<string, number>();
  for (const [label, text] of Object.entries(forged)) {
    const pid = deadPid();
    pids.set(label, pid);
    writeFileSync(
      join(dir, `${pid}.json`),
      text.replace(`"pid":${live.pid}`, `"pid":${label === 'pid not the file name' ? live.pid + 1 : pid}`),
    );
  }
  const link = `${deadPid()}.json`;
  symlinkSync('/etc/passwd', join(dir, link));
  writeFileSync(join(dir, 'notes.txt'), 'not an entry');
  const entries = await registry.entries();
  t.same(
    entries.map((entry) => entry.pid),
    [live.pid],
    'only the well-formed live entry is listed',
  );
  // Not provably ours (unparsable, another schema, not JSON of an object, a link): left alone.
  const kept = ['garbage', 'wrong schema', 'huge', 'array'].map((label) => `${pids.get(label)}.json`);
  t.same(
    readdirSync(dir).sort(),
    [`${live.pid}.json`, 'notes.txt', link, ...kept].sort(),
    'stale files of our schema were removed, nothing else',
  );
});

t.test("files that are not provably ours and dead are left alone; another program's live entry is foreign", async (t) => {
  const dir = join(scratchDir(t), 'registry');
  const registry = await openFsRegistry({ env: { PAM_TUNNEL_REGISTRY: dir } });
  const commander = await liveProcess(t);
  const owner = await liveProcess(t);
  const old = new Date(Date.now() - 3_600_000);
  const files: Record<string, string> = {
    '2023.json': '{"year": 2023, "notes": "mine"}',
    '.notes.tmp': 'draft',
    // Keeper Commander's schema (tunnel_registry.py): no `schema`, top-level pid/host/port/mode.
    [`${commander.pid}.json`]: JSON.stringify({
      pid: commander.pid,
      record_uid: 'rUid',
      host: '127.0.0.1',
      port: 5432,
      mode: 'background',
      pid_started_at: 'x',
    }),
    [`${deadPid()}.json`]: JSON.stringify({ pid: 1, record_uid: 'gone', host: '127.0.0.1', port: 1, mode: 'run' }),
    // A live owner's entry caught torn (another writer's bug, a disk hiccup): not a reason to delete it.
    [`${owner.pid}.json`]: '{"schema":1,"pid":',
    [`.${owner.pid}.0a0b0c0d.tmp`]: 'being written',
  };
  for (const [name, text] of Object.entries(files)) {
    writeFileSync(join(dir, name), text, { mode: 0o600 });
    utimesSync(join(dir, name), old, old);
  }
  const ourDeadTemp = `.${deadPid()}.0a0b0c0e.tmp`;
  writeFileSync(join(dir, ourDeadTemp), 'left by a writer that died');
  const scan = await registry.scan();
  t.same(scan.entries, [], 'none of them is a live entry of ours');
  t.same(
    scan.foreign,
    [{ pid: commander.pid, host: '127.0.0.1', port: 5432, mode: 'background', label: 'rUid' }],
    "Commander's live entry is foreign",
  );
  t.same(readdirSync(dir).sort(), Object.keys(files).sort(), 'only our own temp file of a dead writer was removed');

  const good = { schema: 1, pid: owner.pid, startTime: owner.startTime, hostname: 'h', tunnels: [record('000000d1', 3101)] };
  writeFileSync(join(dir, `${owner.pid}.json`), JSON.stringify(good));
  t.same(
    (await registry.entries()).map((entry) => entry.pid),
    [owner.pid],
    'once whole again, the live owner is listed',
  );
  await owner.kill();
  await commander.kill();
  const after = await registry.scan();
  t.same([after.entries, after.foreign], [[], []], 'dead owners are not listed');
  t.notOk(existsSync(join(dir, `${owner.pid}.json`)), 'our dead entry is removed');
  t.ok(existsSync(join(dir, `${commander.pid}.json`)), "Commander's dead entry is Commander's to clean");
});

t.test('our entries carry the top-level fields Keeper Commander reads (pid, host, port, mode)', async (t) => {
  const registry = await openFsRegistry({ env: { PAM_TUNNEL_REGISTRY: join(scratchDir(t), 'registry') } });
  await registry.put(record('000000e1', 6001));
  const written = JSON.parse(readFileSync(registry.entryPath, 'utf8')) as Record<string, unknown>;
  t.match(written, { schema: 1, pid: process.pid, host: '127.0.0.1', port: 6001, mode: record('000000e1', 6001).mode });
  t.same(
    (await registry.entries())[0]?.tunnels.map((tunnel) => tunnel.port),
    [6001],
    'and still read back as ours',
  );
  await registry.remove('000000e1');
});

t.test('two cleaners racing over the same stale files both succeed', async (t) => {
  const dir = join(scratchDir(t), 'registry');
  const [a, b] = await Promise.all([openFsRegistry({ env: {}, dir }), openFsRegistry({ env: {}, dir, pid: 1, startTime: 'x' })]);
  for (let i = 0; i < 30; i += 1) {
    const pid = deadPid();
    writeFileSync(
      join(dir, `${pid}.json`),
      JSON.stringify({ schema: 1, pid, startTime: '1', hostname: 'h', tunnels: [record('000000b1', 4000 + i)] }),
    );
  }
  const [first, second] = await Promise.all([a.entries(), b.entries()]);
  t.same([first, second], [[], []]);
  t.same(readdirSync(dir), []);
});

t.test('pid files: refuse a live registered owner (75), accept unregistered or dead pids, write and remove exactly', async (t) => {
  const base = scratchDir(t);
  const registry = await openFsRegistry({ env: {}, dir: join(base, 'registry') });
  const owner = await liveProcess(t);
  const ownerRegistry = await openFsRegistry({ env: {}, dir: registry.location, pid: owner.pid, startTime: owner.startTime });
  await ownerRegistry.put(record('000000c1', 5001));
  const pidFiles = createPidFiles({ registry });
  const path = join(base, 'tunnel.pid');

  writeFileSync(path, `${owner.pid}\n`);
  const refused = await pidFiles.check(path).then(
    () => undefined,
    (error: { kind?: string; message: string }) => error,
  );
  t.equal(refused?.kind, 'portBusy');
  t.equal(failureKinds.portBusy.exitCode, 75);
  t.match(refused?.message, `names running tunnel process ${owner.pid}`);

  writeFileSync(path, `${process.ppid}\n`);
  await t.resolves(pidFiles.check(path), 'a live pid the registry does not vouch for is stale to us');
  writeFileSync(path, `${deadPid()}\n`);
  await t.resolves(pidFiles.check(path), 'a dead pid is stale');

  await pidFiles.write(path, 4242);
  t.equal(readFileSync(path, 'utf8'), '4242\n');
  t.equal(statSync(path).mode & 0o777, 0o644);
  await pidFiles.remove(path, 4343);
  t.ok(existsSync(path), 'not removed when it names another pid');
  await pidFiles.remove(path, 4242);
  t.notOk(existsSync(path), 'removed when it still names ours');
  const missingDir = await pidFiles.write(join(base, 'nope', 'x.pid'), 1).then(
    () => undefined,
    (error: { kind?: string; message: string }) => error,
  );
  t.equal(missingDir?.kind, 'usage');
  t.match(missingDir?.message, /does not exist/);
});

t.test('an unsafe shared directory falls back to keeper-tunnel-sessions-<uid>', async (t) => {
  const tmp = scratchDir(t);
  const elsewhere = join(tmp, 'elsewhere');
  mkdirSync(elsewhere, { mode: 0o700 });
  symlinkSync(elsewhere, join(tmp, 'keeper-tunnel-sessions'));
  const previous = process.env.TMPDIR;
  process.env.TMPDIR = tmp; // os.tmpdir() follows TMPDIR
  t.teardown(() => {
    if (previous === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = previous;
  });
  const registry = await openFsRegistry({ env: {} });
  t.equal(registry.location, join(tmp, `keeper-tunnel-sessions-${process.geteuid!()}`));
  t.equal(statSync(registry.location).mode & 0o777, 0o700);
  t.same(readdirSync(elsewhere), [], 'nothing was written through the symlink');
});

t.test("a control socket left by a dead owner is removed; a live owner's stays", async (t) => {
  const dir = join(scratchDir(t), 'registry');
  const registry = await openFsRegistry({ env: { PAM_TUNNEL_REGISTRY: dir } });
  // A process that listens on <its pid>.sock and is then killed: the socket file outlives it.
  const script =
    "const p=require('path').join(process.argv[1], process.pid + '.sock'); require('net').createServer().listen(p, () => console.log(p))";
  const child = spawn(process.execPath, ['-e', script, dir], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  t.teardown(() => {
    child.kill('SIGKILL');
    return exited;
  });
  const stale = await new Promise<string>((resolve) => child.stdout!.once('data', (chunk: Buffer) => resolve(chunk.toString().trim())));
  child.kill('SIGKILL');
  await exited;
  const live = await liveProcess(t);
  const livePath = join(dir, `${live.pid}.sock`);
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(livePath, resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  t.ok(existsSync(stale), 'the dead owner left its socket');
  await registry.entries();
  t.notOk(existsSync(stale), 'removed: its pid is gone');
  t.ok(existsSync(livePath), 'a live pid keeps its socket');
});
