// `pam shell` as operators use it: in a real pseudo-terminal (tmux) with tunnels that persist in the
// session and are visible and stoppable from other processes; and as a piped script without a TTY.

import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { echoServer, isAlive, pam, pamBin, portIsOpen, roundTrip, scratchDir, spawnProc, startGatewayProc, tunnelEnv, until } from '../support/processes.js';
import { skipBecause } from '../support/tap.js';

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
  const listed = JSON.parse(shell.stdout.slice(shell.stdout.indexOf('['), shell.stdout.lastIndexOf(']') + 1)) as Array<{ mode: string; pid: number }>;
  t.equal(listed.length, 2, 'both tunnels listed from inside the shell');
  t.ok(listed.every((row) => row.mode === 'shell' && row.pid === listed[0]!.pid), 'owned by one process (the shell), mode shell');
  t.same(readdirSync(join(dir, 'registry')).filter((name) => /\.(json|sock)$/.test(name)), [], 'no registry entry or control socket left');
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
  // An explicit socket path, removed at teardown: with -L, tmux leaves /tmp/tmux-<uid> behind.
  // Not inside `dir`, which may be removed before kill-server runs and would orphan the server.
  const socket = join(tmpdir(), `pam-spec-tmux-${process.pid}.sock`);
  const tmux = (...args: string[]) => spawnSync('tmux', ['-S', socket, ...args], { encoding: 'utf8' });
  t.teardown(() => {
    tmux('kill-server');
    rmSync(socket, { force: true });
  });
  const exports = Object.entries(env).map(([key, value]) => `${key}=${value}`);
  const started = tmux('new-session', '-d', '-s', 'pam', '-x', '220', '-y', '50', 'env', '-u', 'CI', ...exports, process.execPath, pamBin, 'shell');
  t.equal(started.status, 0, started.stderr);
  const pane = () => tmux('capture-pane', '-p', '-J', '-t', 'pam', '-S', '-200').stdout;
  const waitFor = async (pattern: RegExp, what: string) => {
    await until(() => pattern.test(pane()), 20_000, `${what}; the pane shows:\n${pane()}`);
    return pattern.exec(pane())!;
  };
  const type = (text: string) => tmux('send-keys', '-t', 'pam', text, 'Enter');

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
  t.same(readdirSync(join(dir, 'registry')).filter((name) => /\.(json|sock)$/.test(name)), [], 'no registry entry or socket left');
  const history = join(dir, 'state', 'pam', 'history');
  t.ok(existsSync(history) && readFileSync(history, 'utf8').includes('tunnel start echo -bg'), 'history was kept');
  t.equal(statSync(history).mode & 0o777, 0o600);
});

t.test('SIGTERM to the shell stops its tunnels cleanly: entry, socket and pid files removed', async (t) => {
  const dir = scratchDir(t);
  const echo = await echoServer(t);
  const gateway = await startGatewayProc(t, dir, token, { echo: echo.port });
  const env = tunnelEnv(dir, token, gateway.url);
  const shell = pam(t, ['shell'], { env, stdin: 'pipe' });
  const pidFiles = [join(dir, 'a.pid'), join(dir, 'b.pid')];
  shell.child.stdin!.write(pidFiles.map((path) => `tunnel start echo --json --pid-file ${path}\n`).join(''));
  await until(() => (shell.stdout.match(/"event":"ready"/g) ?? []).length === 2, 20_000, 'two tunnels');
  t.same(pidFiles.map((path) => readFileSync(path, 'utf8')), [`${shell.pid}\n`, `${shell.pid}\n`], 'pid files name the shell');
  shell.child.kill('SIGTERM');
  t.equal(await shell.exited, 0);
  t.same(pidFiles.filter((path) => existsSync(path)), [], 'pid files removed');
  t.same(readdirSync(join(dir, 'registry')).filter((name) => /\.(json|sock)$/.test(name)), [], 'entry and control socket removed');
  t.match(shell.stdout, /"event":"stopped".*stopped by SIGTERM/, 'each tunnel says why it stopped');
});
