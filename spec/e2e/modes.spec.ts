// The non-interactive modes as scripts and CI meet them: real `pam` processes, a real gateway, real
// targets on 127.0.0.1. Every exit code, file and printed line asserted here is a contract.

import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { skipBecause } from '../support/tap.js';
import {
  echoServer,
  isAlive,
  pam,
  portIsOpen,
  postgres,
  silentGateway,
  randomPayload,
  roundTrip,
  scratchDir,
  sha256,
  startGatewayProc,
  tunnelEnv,
  until,
  type Teardownable,
} from '../support/processes.js';

const token = 'modes-token-51c2';

async function setup(t: Teardownable) {
  const dir = scratchDir(t);
  const echo = await echoServer(t);
  const gateway = await startGatewayProc(t, dir, token, { echo: echo.port });
  const env = tunnelEnv(dir, token, gateway.url);
  const registry = join(dir, 'registry');
  const entries = () => (existsSync(registry) ? readdirSync(registry).filter((name) => name.endsWith('.json')) : []);
  return { dir, echo, gateway, env, registry, entries };
}

const node = JSON.stringify(process.execPath);
/** A shell command that sends `text` through the tunnel to the echo target and prints the answer. */
const echoThroughTunnel = (text: string) =>
  `${node} -e 'const s=require("net").connect(+process.env.PAM_TUNNEL_PORT,process.env.PAM_TUNNEL_HOST,()=>s.write(process.argv[1]));s.on("data",d=>{process.stdout.write(d);s.end()})' ${text}`;

t.test('--run: the command talks through the tunnel; its stdout is clean; pam exits with its code', async (t) => {
  const { env, entries } = await setup(t);
  const ok = pam(t, ['tunnel', 'start', 'echo', '--run', echoThroughTunnel('hello-through-the-tunnel')], { env });
  t.equal(await ok.exited, 0);
  t.equal(ok.stdout, 'hello-through-the-tunnel', 'stdout holds only the command output');
  t.match(ok.stderr, /listening on 127\.0\.0\.1:\d+ → echo/, "pam's own lines go to stderr");

  const seven = pam(t, ['tunnel', 'start', 'echo', '-R', 'echo "$PAM_TUNNEL_HOST $PAM_TUNNEL_PORT $PAM_TUNNEL_ID"; exit 7'], { env });
  t.equal(await seven.exited, 7, 'exit code of the command');
  t.match(seven.stdout, /^127\.0\.0\.1 \d+ [0-9a-f]{8}\n$/, 'PAM_TUNNEL_* are set for the command');
  t.same(entries(), [], 'no registry entry left');
});

t.test('--run: killed by a signal → 128+N, not found → 127, shell metacharacters intact', async (t) => {
  const { env } = await setup(t);
  const killed = pam(t, ['tunnel', 'start', 'echo', '-R', 'kill -TERM $$'], { env });
  t.equal(await killed.exited, 143, 'SIGTERM-killed command → 143');
  const missing = pam(t, ['tunnel', 'start', 'echo', '-R', 'pam-no-such-command-xyz'], { env });
  t.equal(await missing.exited, 127, 'command not found → 127');
  const meta = pam(t, ['tunnel', 'start', 'echo', '-R', `printf '%s|' "a b" 'c;d' '$HOME' && printf 'x > y'`], { env });
  t.equal(await meta.exited, 0);
  t.equal(meta.stdout, 'a b|c;d|$HOME|x > y', 'the command string reaches the shell unaltered');
});

t.test('--run: SIGTERM to pam reaches the command, then pam tears down: no process, pid file or entry left', async (t) => {
  const { env, entries, dir } = await setup(t);
  const pidFile = join(dir, 'run.pid');
  const tunnel = pam(t, ['tunnel', 'start', 'echo', '--json', '--pid-file', pidFile, '-R', 'echo "sleeper $$"; exec sleep 30'], { env });
  const line = await tunnel.line(/^sleeper \d+$/);
  const sleeper = Number(line.split(' ')[1]);
  t.equal(readFileSync(pidFile, 'utf8'), `${tunnel.pid}\n`, 'pid file names pam while the command runs');
  t.equal(entries().length, 1, 'registry entry while running');
  tunnel.child.kill('SIGTERM');
  t.equal(await tunnel.exited, 143, "exit code is the command's: killed by SIGTERM");
  t.notOk(isAlive(sleeper), 'the wrapped command is gone');
  t.notOk(existsSync(pidFile), 'pid file removed');
  t.same(entries(), [], 'registry entry removed');
  t.match(tunnel.stderr, /"event":"stopped"/, 'a stopped line is printed (stderr in run mode)');
});

t.test('--run against real Postgres: rows written and read back through the tunnel', async (t) => {
  const pgPort = await postgres(t);
  const dir = scratchDir(t);
  const gateway = await startGatewayProc(t, dir, token, { db: pgPort });
  const env = tunnelEnv(dir, token, gateway.url);
  const run = pam(t, ['tunnel', 'start', 'db', '--run', `${node} spec/support/pg-roundtrip.js`], { env });
  t.equal(await run.exited, 0, run.stderr);
  t.same(JSON.parse(run.stdout), [
    { id: 1, name: 'alpha' },
    { id: 2, name: 'beta' },
    { id: 3, name: 'gamma' },
    { id: 4, name: 'δέλτα' },
  ]);

  const psql = spawnSync('psql', ['--version'], { encoding: 'utf8' });
  if (psql.status !== 0) {
    skipBecause(t, `psql is not installed (${psql.error?.message ?? psql.stderr}); the pg client check above still ran`);
    return;
  }
  const query = `psql -X -A -t -h "$PAM_TUNNEL_HOST" -p "$PAM_TUNNEL_PORT" -U postgres -d postgres -c "select 40 + 2 as answer, 'through the tunnel'"`;
  const viaPsql = pam(t, ['tunnel', 'start', 'db', '--run', query], { env: { ...env, PGCONNECT_TIMEOUT: '10' } });
  t.equal(await viaPsql.exited, 0, viaPsql.stderr);
  t.equal(viaPsql.stdout.trim(), '42|through the tunnel', 'psql result came back through the tunnel');
});

t.test('--background returns once the port is usable; kill -TERM $(cat P) removes process, pid file and entry', async (t) => {
  const { env, entries, dir } = await setup(t);
  const pidFile = join(dir, 'bg.pid');
  const launcher = pam(t, ['tunnel', 'start', 'echo', '--background', '--json', '--pid-file', pidFile], { env });
  t.equal(await launcher.exited, 0, launcher.stderr);
  const ready = JSON.parse(launcher.stdout) as { id: string; pid: number; host: string; port: number; target: string; logFile: string };
  t.teardown(() => {
    if (isAlive(ready.pid)) process.kill(ready.pid, 'SIGKILL');
  });
  t.match(ready, { id: /^[0-9a-f]{8}$/, host: '127.0.0.1', target: 'echo' });
  const payload = randomPayload(256 * 1024);
  t.equal(sha256(await roundTrip(ready.port, payload)), sha256(payload), 'the port carries bytes the moment the launcher returns');
  t.equal(readFileSync(pidFile, 'utf8'), `${ready.pid}\n`, 'pid file names the owner (the child)');
  t.not(ready.pid, launcher.pid, 'the owner is a separate process');
  t.ok(existsSync(ready.logFile), 'log file exists');

  process.kill(Number(readFileSync(pidFile, 'utf8')), 'SIGTERM'); // kill -TERM $(cat P)
  await until(() => !isAlive(ready.pid), 5_000, 'owner exit');
  t.notOk(existsSync(pidFile), 'pid file removed');
  t.same(entries(), [], 'registry entry removed');
  t.notOk(await portIsOpen(ready.port), 'port closed');
});

t.test("--background failures exit with the owner's code and leave no child", async (t) => {
  const { env, entries, echo } = await setup(t);
  const busy = pam(t, ['tunnel', 'start', 'echo', '-bg', '--port', String(echo.port)], { env });
  t.equal(await busy.exited, 75, 'busy local port → 75');
  t.match(busy.stderr, /already in use/);
  const unknown = pam(t, ['tunnel', 'start', 'nosuch', '-bg'], { env });
  t.equal(await unknown.exited, 68, 'unknown target → 68');
  const refused = pam(t, ['tunnel', 'start', 'echo', '-bg'], { env: { ...env, PAM_GATEWAY_TOKEN: 'not-the-token' } });
  t.equal(await refused.exited, 77, 'bad token → 77');
  const silent = await silentGateway(t);
  const timedOut = pam(t, ['tunnel', 'start', 'echo', '-bg', '--timeout', '1', '--gateway', silent.url], { env });
  t.equal(await timedOut.exited, 124, 'connect timeout → 124');
  t.match(timedOut.stderr, /connect timeout after 1 s in signalling/);
  t.same(entries(), [], 'no owner left registered');
});

t.test('--timeout bounds the connect: a gateway that never answers → 124 naming the stage', async (t) => {
  const { env } = await setup(t);
  const silent = await silentGateway(t);
  const tunnel = pam(t, ['tunnel', 'start', 'echo', '--timeout', '2', '--gateway', silent.url], { env });
  t.equal(await tunnel.exited, 124);
  t.match(tunnel.stderr, /connect timeout after 2 s in signalling: raise --timeout/);
});

t.test('--pid-file naming a running tunnel is refused with 75; a stale one is replaced', async (t) => {
  const { env, dir } = await setup(t);
  const pidFile = join(dir, 'shared.pid');
  const first = pam(t, ['tunnel', 'start', 'echo', '-fg', '--json', '--pid-file', pidFile], { env });
  await first.event('ready');
  const second = pam(t, ['tunnel', 'start', 'echo', '--pid-file', pidFile, '-R', 'true'], { env });
  t.equal(await second.exited, 75);
  t.match(second.stderr, /names running tunnel process/);
  first.child.kill('SIGTERM');
  t.equal(await first.exited, 0);
  t.notOk(existsSync(pidFile), 'removed on SIGTERM');
  writeFileSync(pidFile, '999999\n');
  const third = pam(t, ['tunnel', 'start', 'echo', '--pid-file', pidFile, '-R', 'true'], { env });
  t.equal(await third.exited, 0, 'a stale pid file does not block');
  t.notOk(existsSync(pidFile), 'and is removed at the end');
});

t.test('usage errors exit 2 with one line naming the fix, before anything connects', async (t) => {
  const { env } = await setup(t);
  const cases: Array<[string[], RegExp]> = [
    [['-fg', '-bg'], /--foreground and --background cannot be combined: choose one of/],
    [['-bg', '-R', 'true'], /--background and --run cannot be combined/],
    [['-fg', '-R', 'x'], /--foreground and --run cannot be combined/],
    [['--timeout', '0'], /--timeout/],
    [['--timeout', 'soon'], /--timeout/],
    [['--port', '70000'], /--port/],
    [['-R', ''], /--run/],
    [['--no-such-flag'], /Unsupported option name \("--no-such-flag"\)/],
  ];
  for (const [args, message] of cases) {
    const proc = pam(t, ['tunnel', 'start', 'echo', ...args], { env });
    t.equal(await proc.exited, 2, args.join(' '));
    t.match(proc.stderr, message, args.join(' '));
    t.notMatch(proc.stderr, /\n\s+at /, 'no stack trace');
  }
  const missing = pam(t, ['tunnel', 'start'], { env });
  t.equal(await missing.exited, 2, 'a missing target is a usage error too (clipanion would say 1)');
});

/** Pids of processes whose command line is exactly `cmdline` (argv joined by spaces). */
function pidsOf(cmdline: string): number[] {
  return readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name))
    .filter((name) => {
      try {
        return readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ') === cmdline;
      } catch {
        return false;
      }
    })
    .map(Number);
}

function killAtTeardown(t: Teardownable, cmdline: string): void {
  t.teardown(() => {
    for (const pid of pidsOf(cmdline)) process.kill(pid, 'SIGKILL');
  });
}

/** Wait until the tunnel's journal shows it received `type` (so the next signal is a separate one). */
async function journalled(registry: string, type: string): Promise<void> {
  const journal = join(registry, 'journal');
  await until(
    () =>
      existsSync(journal) && readdirSync(journal).some((name) => readFileSync(join(journal, name), 'utf8').includes(`"type":"${type}"`)),
    10_000,
    `the journal to record ${type}`,
  );
}

t.test('--run: a command that ignores SIGTERM/SIGINT: a second signal SIGKILLs its group, tears down, exits 128+N', async (t) => {
  const { env, entries, registry } = await setup(t);
  const sleeper = 'sleep 47.1517';
  killAtTeardown(t, sleeper);
  const tunnel = pam(t, ['tunnel', 'start', 'echo', '--json', '-R', `trap "" TERM INT; echo "shell $$"; ${sleeper}`], { env });
  const shellPid = Number((await tunnel.line(/^shell \d+$/)).split(' ')[1]);
  await until(() => pidsOf(sleeper).length === 1, 5_000, 'the sleep to start');
  tunnel.child.kill('SIGTERM');
  await journalled(registry, 'tunnel.stop');
  t.ok(isAlive(shellPid), 'the first signal is passed on and ignored');
  tunnel.child.kill('SIGINT');
  t.equal(await tunnel.exited, 130, 'the second signal (SIGINT) sets the exit code: 128+2');
  t.match(tunnel.stderr, /"event":"stopped".*killed \(SIGKILL\) on a second signal, SIGINT/);
  t.notOk(isAlive(shellPid), 'the sh -c is gone');
  t.same(pidsOf(sleeper), [], 'and so is its sleep');
  t.same(entries(), [], 'registry entry removed');
});

t.test('--run: nothing the command started outlives pam (a background job the shell left behind)', async (t) => {
  const { env } = await setup(t);
  const sleeper = 'sleep 41.2719';
  killAtTeardown(t, sleeper);
  const tunnel = pam(t, ['tunnel', 'start', 'echo', '-R', `${sleeper} & echo bye`], { env });
  t.equal(await tunnel.exited, 0, tunnel.stderr);
  t.equal(tunnel.stdout, 'bye\n');
  await until(() => pidsOf(sleeper).length === 0, 5_000, `${sleeper} to be gone`).catch(() => undefined);
  t.same(pidsOf(sleeper), [], `${sleeper} did not outlive pam`);
});

t.test('pam tunnel stop --wait 2 --force on a --run tunnel kills pam, the sh -c and its children', async (t) => {
  const { env, registry } = await setup(t);
  const sleeper = 'sleep 43.3137';
  killAtTeardown(t, sleeper);
  const tunnel = pam(t, ['tunnel', 'start', 'echo', '--json', '-R', `trap "" TERM INT; echo "shell $$"; ${sleeper}`], { env });
  const shellPid = Number((await tunnel.line(/^shell \d+$/)).split(' ')[1]);
  await until(() => pidsOf(sleeper).length === 1, 5_000, 'the sleep to start');
  const id = String((await tunnel.event('ready')).id);
  const stop = pam(t, ['tunnel', 'stop', id, '--wait', '2', '--force'], { env });
  t.equal(await stop.exited, 0, stop.stderr);
  t.match(stop.stdout, /killed with SIGKILL/);
  t.equal(await tunnel.exited, 128 + 9, 'pam was SIGKILLed');
  await until(() => !isAlive(shellPid) && pidsOf(sleeper).length === 0, 5_000, 'the command to be gone').catch(() => undefined);
  t.notOk(isAlive(shellPid), 'the sh -c is gone');
  t.same(pidsOf(sleeper), [], 'and so is its sleep');
  t.same(
    readdirSync(registry).filter((name) => name.endsWith('.json')),
    [],
    'registry entry removed',
  );
});

t.test('--run: a command that handles SIGINT and exits 0 gives pam exit 0 (no shell re-raises it)', async (t) => {
  const { env } = await setup(t);
  const handler = `${node} -e 'process.on("SIGINT",()=>{console.log("handled");process.exit(0)});console.log("ready");setInterval(()=>{},1000)'`;
  const tunnel = pam(t, ['tunnel', 'start', 'echo', '-R', handler], { env });
  await tunnel.line(/^ready$/);
  tunnel.child.kill('SIGINT');
  t.equal(await tunnel.exited, 0, tunnel.stderr);
  t.equal(tunnel.stdout, 'ready\nhandled\n');
});
