// `pam shell` as operators use it: in a real pseudo-terminal (tmux) with tunnels that persist in the
// session and are visible and stoppable from other processes; and as a piped script without a TTY.

import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import {
  echoServer,
  isAlive,
  pam,
  pamBin,
  portIsOpen,
  roundTrip,
  scratchDir,
  silentGateway,
  spawnProc,
  startGatewayProc,
  tunnelEnv,
  until,
} from '../support/processes.js';
import { skipBecause, type TapTest } from '../support/tap.js';

const token = 'shell-token-d00d';

t.test('piped script: lines run in order without prompts; exit code of the last failure; nothing left', async (t) => {
  const dir = scratchDir(t);
  const echo = await echoServer(t);
  const gateway = await startGatewayProc(t, dir, token, { echo: echo.port });
  const env = tunnelEnv(dir, token, gateway.url);
  const script = 'tunnel start echo -bg\npam tunnel start echo --json\ntunnel start nosuch\ntunnel list --json\n';
  const shell = spawnProc(t, 'sh', ['-c', `printf '${script.replace(/\n/g, '\\n')}' | "${process.execPath}" "${pamBin}" shell`], { env });
  t.equal(await shell.exited, 68, 'the last failing command was the unknown target');
  t.match(shell.stderr, /--background skipped: tunnels persist for this shell session/, 'the -bg notice');
  t.notMatch(shell.stdout, /pam> /, 'no prompts without a terminal');
  const listed = JSON.parse(shell.stdout.slice(shell.stdout.indexOf('['), shell.stdout.lastIndexOf(']') + 1)) as Array<{
    mode: string;
    pid: number;
  }>;
  t.equal(listed.length, 2, 'both tunnels listed from inside the shell');
  t.ok(
    listed.every((row) => row.mode === 'shell' && row.pid === listed[0]!.pid),
    'owned by one process (the shell), mode shell',
  );
  t.same(
    readdirSync(join(dir, 'registry')).filter((name) => /\.(json|sock)$/.test(name)),
    [],
    'no registry entry or control socket left',
  );
});

const hasTmux = spawnSync('tmux', ['-V'], { stdio: 'ignore' }).status === 0;

t.test('in a terminal: two tunnels, one stopped from outside, exit with confirmation', async (t) => {
  if (!hasTmux) {
    skipBecause(t, 'tmux is not installed: the pseudo-terminal test cannot run here');
    return;
  }
  const dir = scratchDir(t);
  const echo = await echoServer(t);
  const gateway = await startGatewayProc(t, dir, token, { echo: echo.port });
  const env = { ...tunnelEnv(dir, token, gateway.url), XDG_STATE_HOME: join(dir, 'state') };
  const { pane, waitFor, type } = tmuxShell(t, env, 'two-tunnels');

  await waitFor(/pam> $/m, 'the prompt');
  type('tunnel start echo -bg');
  const first = await waitFor(/listening on 127\.0\.0\.1:(\d+) → echo \(tunnel ([0-9a-f]{8})/, 'the first tunnel');
  t.match(pane(), /--background skipped: tunnels persist for this shell session/, 'the -bg notice is shown');
  type('tunnel start echo');
  await until(() => (pane().match(/listening on 127\.0\.0\.1:\d+ → echo/g) ?? []).length === 2, 20_000, 'the second tunnel');
  const second = [...pane().matchAll(/listening on 127\.0\.0\.1:(\d+) → echo \(tunnel ([0-9a-f]{8})/g)][1]!;
  type('tunnel list');
  await waitFor(new RegExp(`${second[2]}\\s+echo\\s+127\\.0\\.0\\.1:${second[1]}\\s+\\d+\\s+shell\\s+ready`), 'both in the list inside');

  const outside = pam(t, ['tunnel', 'list', '--json'], { env });
  t.equal(await outside.exited, 0);
  const rows = JSON.parse(outside.stdout) as Array<{ id: string; pid: number; mode: string }>;
  t.same(rows.map((row) => row.id).sort(), [first[2], second[2]].sort(), 'another process lists both');
  const shellPid = rows[0]!.pid;

  const stop = pam(t, ['tunnel', 'stop', first[2]!], { env });
  t.equal(await stop.exited, 0, stop.stderr);
  await waitFor(new RegExp(`tunnel ${first[2]} stopped by SIGTERM from pam tunnel stop`), 'the shell to report the stop');
  t.notOk(await portIsOpen(Number(first[1])), 'the stopped tunnel released its port');
  t.same(await roundTrip(Number(second[1]), Buffer.from('still here')), Buffer.from('still here'), 'the other tunnel still carries bytes');
  t.ok(isAlive(shellPid), 'the shell lives on');

  type('exit');
  await waitFor(/1 tunnel open: stop it and exit\? \[y\/N\]/, 'the confirmation');
  type('y');
  await until(() => !isAlive(shellPid), 10_000, 'the shell to exit');
  t.notOk(await portIsOpen(Number(second[1])), 'no port left');
  t.same(
    readdirSync(join(dir, 'registry')).filter((name) => /\.(json|sock)$/.test(name)),
    [],
    'no registry entry or socket left',
  );
  const history = join(dir, 'state', 'pam', 'history');
  t.ok(existsSync(history) && readFileSync(history, 'utf8').includes('tunnel start echo -bg'), 'history was kept');
  t.equal(statSync(history).mode & 0o777, 0o600);
});

interface HistoryRow {
  id: string;
  exitCode: number | null;
  reason: string;
}

async function historyRows(t: TapTest, env: NodeJS.ProcessEnv): Promise<HistoryRow[]> {
  const history = pam(t, ['tunnel', 'history', '--json'], { env });
  t.equal(await history.exited, 0, history.stderr);
  return JSON.parse(history.stdout) as HistoryRow[];
}

const registryFiles = (dir: string) => readdirSync(join(dir, 'registry')).filter((name) => /\.(json|sock)$/.test(name));

for (const signal of ['SIGTERM', 'SIGHUP'] as const) {
  t.test(`one ${signal} to the shell is one clean stop per tunnel: exit 0, "stopped by ${signal}" in output and history`, async (t) => {
    const dir = scratchDir(t);
    const echo = await echoServer(t);
    const gateway = await startGatewayProc(t, dir, token, { echo: echo.port });
    const env = tunnelEnv(dir, token, gateway.url);
    const shell = pam(t, ['shell'], { env, stdin: 'pipe' });
    const pidFiles = [join(dir, 'a.pid'), join(dir, 'b.pid')];
    shell.child.stdin!.write(pidFiles.map((path) => `tunnel start echo --json --pid-file ${path}\n`).join(''));
    await until(() => (shell.stdout.match(/"event":"ready"/g) ?? []).length === 2, 20_000, 'two tunnels');
    t.same(
      pidFiles.map((path) => readFileSync(path, 'utf8')),
      [`${shell.pid}\n`, `${shell.pid}\n`],
      'pid files name the shell',
    );
    shell.child.kill(signal);
    t.equal(await shell.exited, 0, 'the shell exits 0');
    t.same(
      pidFiles.filter((path) => existsSync(path)),
      [],
      'pid files removed',
    );
    t.same(registryFiles(dir), [], 'entry and control socket removed');
    const stopped = shell.stdout
      .split('\n')
      .filter((line) => line.includes('"event":"stopped"'))
      .map((line) => JSON.parse(line) as { exitCode: number; reason: string });
    t.same(
      stopped.map(({ exitCode, reason }) => ({ exitCode, reason })),
      [
        { exitCode: 0, reason: `stopped by ${signal}` },
        { exitCode: 0, reason: `stopped by ${signal}` },
      ],
      'each tunnel stopped once, cleanly (no "teardown cut short")',
    );
    const rows = await historyRows(t, env);
    t.same(
      rows.map(({ exitCode, reason }) => ({ exitCode, reason })),
      [
        { exitCode: 0, reason: `stopped by ${signal}` },
        { exitCode: 0, reason: `stopped by ${signal}` },
      ],
      'history records two clean stops',
    );
  });
}

t.test('pam tunnel stop from another process asks the control channel: stop <id> and stop --all leave the shell running', async (t) => {
  const dir = scratchDir(t);
  const echo = await echoServer(t);
  const gateway = await startGatewayProc(t, dir, token, { echo: echo.port });
  const env = tunnelEnv(dir, token, gateway.url);
  const shell = pam(t, ['shell'], { env, stdin: 'pipe' });
  const readyIds = () =>
    [...shell.stdout.matchAll(/"event":"ready".*?"id":"([0-9a-f]{8})"|"id":"([0-9a-f]{8})".*?"event":"ready"/g)].map((m) => m[1] ?? m[2]!);
  const stoppedLines = () =>
    shell.stdout
      .split('\n')
      .filter((line) => line.includes('"event":"stopped"'))
      .map((line) => JSON.parse(line) as { id: string; exitCode: number; reason: string });

  shell.child.stdin!.write('tunnel start echo --json\n');
  await until(() => readyIds().length === 1, 20_000, 'one tunnel');
  const only = pam(t, ['tunnel', 'stop', readyIds()[0]!], { env });
  t.equal(await only.exited, 0, only.stderr);
  await until(() => stoppedLines().length === 1, 10_000, 'the tunnel to stop');
  t.ok(isAlive(shell.pid) && shell.child.exitCode === null, 'stopping the only tunnel leaves the shell running');

  shell.child.stdin!.write('tunnel start echo --json\ntunnel start echo --json\n');
  await until(() => readyIds().length === 3, 20_000, 'two more tunnels');
  const all = pam(t, ['tunnel', 'stop', '--all'], { env });
  t.equal(await all.exited, 0, all.stderr);
  await until(() => stoppedLines().length === 3, 10_000, 'both tunnels to stop');
  t.ok(isAlive(shell.pid) && shell.child.exitCode === null, 'stop --all with two shell tunnels leaves the shell running');
  t.same(
    stoppedLines().map(({ exitCode, reason }) => ({ exitCode, reason })),
    Array.from({ length: 3 }, () => ({ exitCode: 0, reason: 'stopped by SIGTERM from pam tunnel stop' })),
    'each tunnel stopped cleanly through the control channel',
  );
  shell.child.stdin!.end();
  t.equal(await shell.exited, 0, 'the shell ends at end of input, exit 0');
  t.same(registryFiles(dir), [], 'entry and control socket removed');
});

t.test('piped script: comments and blank lines are skipped, exit N exits N, shell inside the shell fails', async (t) => {
  const dir = scratchDir(t);
  const env = tunnelEnv(dir, token, 'http://127.0.0.1:9');
  const script = async (text: string) => {
    const shell = pam(t, ['shell'], { env, stdin: 'pipe' });
    shell.child.stdin!.end(text);
    return { code: await shell.exited, shell };
  };
  const comments = await script('# a comment\n\n   \n  # indented comment\ntunnel list --json # trailing\n');
  t.equal(comments.code, 0, `comments and blank lines are not commands: ${comments.shell.stderr}`);
  t.equal(comments.shell.stderr, '', 'nothing complained');
  const exits = await script('# leave early\nexit 3\ntunnel start nosuch\n');
  t.equal(exits.code, 3, 'exit 3 exits 3');
  t.notMatch(exits.shell.stderr, /nosuch/, 'nothing after exit runs');
  const badExit = await script('exit soon\n');
  t.equal(badExit.code, 2, 'exit with a non-number is a usage error');
  const nested = await script('shell\n');
  t.equal(nested.code, 2, 'shell inside the shell is an error');
  t.match(nested.shell.stderr, /already in pam shell/);
});

t.test('a frozen shell (SIGSTOP): stop --wait 2 fails without acting later; --force SIGKILLs the owner', async (t) => {
  const dir = scratchDir(t);
  const echo = await echoServer(t);
  const gateway = await startGatewayProc(t, dir, token, { echo: echo.port });
  const env = tunnelEnv(dir, token, gateway.url);
  const shell = pam(t, ['shell'], { env, stdin: 'pipe' });
  t.teardown(() => {
    if (isAlive(shell.pid)) process.kill(shell.pid, 'SIGCONT');
  });
  shell.child.stdin!.write('tunnel start echo --json\ntunnel start echo --json\n');
  await until(() => (shell.stdout.match(/"event":"ready"/g) ?? []).length === 2, 20_000, 'two tunnels');
  const listed = pam(t, ['tunnel', 'list', '--json'], { env });
  t.equal(await listed.exited, 0);
  const [first, second] = JSON.parse(listed.stdout) as Array<{ id: string; port: number }>;

  process.kill(shell.pid, 'SIGSTOP');
  const unanswered = pam(t, ['tunnel', 'stop', first!.id, '--wait', '2'], { env });
  t.equal(await unanswered.exited, 1, 'an owner that does not answer within --wait → 1');
  t.match(unanswered.stderr, /did not answer within 2 s; retry with --force/);
  process.kill(shell.pid, 'SIGCONT');
  const later = pam(t, ['tunnel', 'stop', second!.id], { env });
  t.equal(await later.exited, 0, `a fresh request is served once the shell runs again: ${later.stderr}`);
  t.same(
    await roundTrip(first!.port, Buffer.from('still up')),
    Buffer.from('still up'),
    'the timed-out request never fired: the first tunnel still carries bytes',
  );
  t.notMatch(
    shell.stdout,
    new RegExp(`"id":"${first!.id}"[^\\n]*"event":"stopped"|"event":"stopped"[^\\n]*"id":"${first!.id}"`),
    'and it never said stopped',
  );

  process.kill(shell.pid, 'SIGSTOP');
  const forced = pam(t, ['tunnel', 'stop', first!.id, '--wait', '2', '--force'], { env });
  t.equal(await forced.exited, 0, forced.stderr);
  t.match(forced.stdout, /killed with SIGKILL/);
  t.equal(await shell.exited, 128 + 9, 'the owner (the shell) was SIGKILLed');
  t.notOk(await portIsOpen(first!.port), 'its port is closed');
});

/**
 * `pam shell` in a tmux pane of its own server, killed and removed at teardown. An explicit socket path:
 * with -L, tmux leaves /tmp/tmux-<uid> behind; not inside the test's dir, which may be removed before
 * kill-server runs and would orphan the server.
 */
function tmuxShell(t: TapTest, env: NodeJS.ProcessEnv, name: string, stderrFile?: string) {
  const socket = join(tmpdir(), `pam-spec-tmux-${process.pid}-${name}.sock`);
  const tmux = (...args: string[]) => spawnSync('tmux', ['-S', socket, ...args], { encoding: 'utf8' });
  t.teardown(() => {
    tmux('kill-server');
    rmSync(socket, { force: true });
  });
  const exports = Object.entries(env).map(([key, value]) => `${key}=${value}`);
  const command = stderrFile
    ? ['sh', '-c', `exec "$0" "$1" shell 2>"$2"`, process.execPath, pamBin, stderrFile]
    : [process.execPath, pamBin, 'shell'];
  const started = tmux('new-session', '-d', '-s', 'pam', '-x', '220', '-y', '50', 'env', '-u', 'CI', ...exports, ...command);
  t.equal(started.status, 0, started.stderr);
  const pane = () => tmux('capture-pane', '-p', '-J', '-t', 'pam', '-S', '-200').stdout;
  const waitFor = async (pattern: RegExp, what: string) => {
    await until(() => pattern.test(pane()), 20_000, `${what}; the pane shows:\n${pane()}`);
    return pattern.exec(pane())!;
  };
  return {
    tmux,
    pane,
    waitFor,
    type: (text: string) => tmux('send-keys', '-t', 'pam', text, 'Enter'),
    keys: (...keys: string[]) => tmux('send-keys', '-t', 'pam', ...keys),
  };
}

t.test('closing the terminal (tmux kill-server) is an orderly stop: no crash, history says stopped, no .sock left', async (t) => {
  if (!hasTmux) {
    skipBecause(t, 'tmux is not installed: the pseudo-terminal test cannot run here');
    return;
  }
  const dir = scratchDir(t);
  const echo = await echoServer(t);
  const gateway = await startGatewayProc(t, dir, token, { echo: echo.port });
  const env = { ...tunnelEnv(dir, token, gateway.url), XDG_STATE_HOME: join(dir, 'state') };
  const stderrFile = join(dir, 'shell.stderr');
  const { tmux, waitFor, type } = tmuxShell(t, env, 'hangup', stderrFile);
  await waitFor(/pam> $/m, 'the prompt');
  type('tunnel start echo');
  const ready = await waitFor(/tunnel ([0-9a-f]{8})/, 'the tunnel');
  const listed = pam(t, ['tunnel', 'list', '--json'], { env });
  t.equal(await listed.exited, 0);
  const shellPid = (JSON.parse(listed.stdout) as Array<{ pid: number }>)[0]!.pid;
  t.ok(existsSync(join(dir, 'registry', `${shellPid}.sock`)), 'the control socket exists while the shell runs');

  tmux('kill-server');
  await until(() => !isAlive(shellPid), 10_000, 'the shell to end after the hangup');
  const stderr = readFileSync(stderrFile, 'utf8');
  t.notMatch(stderr, /Assertion failed|EIO|Unhandled|Segmentation|internal error|\n\s+at /, `no crash on the way out:\n${stderr}`);
  const rows = await historyRows(t, env);
  t.same(
    rows.map(({ id, exitCode }) => ({ id, exitCode })),
    [{ id: ready[1]!, exitCode: 0 }],
    'history: the tunnel ended cleanly (exit 0, not "owner died")',
  );
  t.match(rows[0]!.reason, /^stopped by (SIGHUP|SIGTERM from the end of pam shell)$/, 'and says it was stopped');
  t.same(registryFiles(dir), [], 'no registry entry or control socket left');
});

t.test('Ctrl+C cancels a tunnel start that is still connecting (130 for that line); the shell goes on', async (t) => {
  if (!hasTmux) {
    skipBecause(t, 'tmux is not installed: the pseudo-terminal test cannot run here');
    return;
  }
  const dir = scratchDir(t);
  const echo = await echoServer(t);
  const gateway = await startGatewayProc(t, dir, token, { echo: echo.port });
  const silent = await silentGateway(t);
  const env = { ...tunnelEnv(dir, token, gateway.url), XDG_STATE_HOME: join(dir, 'state') };
  const { pane, waitFor, type, keys } = tmuxShell(t, env, 'interrupt');
  await waitFor(/pam> $/m, 'the prompt');
  type(`tunnel start echo --json --timeout 120 --gateway ${silent.url}`);
  await until(() => silent.connections() > 0, 20_000, 'the tunnel to reach the silent gateway');
  keys('C-c');
  const stopped = await waitFor(/\{"event":"stopped".*\}/, 'the cancelled tunnel to report');
  const outcome = JSON.parse(stopped[0]) as { exitCode: number; reason: string };
  t.equal(outcome.exitCode, 130, 'that line ends with 130');
  t.match(outcome.reason, /^stopped by SIGINT while signalling$/);
  type('tunnel start echo');
  await waitFor(/listening on 127\.0\.0\.1:\d+ → echo/, 'the shell to go on and start another tunnel');
  t.notMatch(pane(), /connect timeout/, 'not ended by --timeout');
});
