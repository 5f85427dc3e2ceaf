// systemd integration: READY=1 with MAINPID reaches a (fake) NOTIFY_SOCKET once the port is usable,
// and the shipped unit files pass `systemd-analyze verify`.

import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { skipBecause } from '../support/tap.js';
import {
  echoServer,
  freePort,
  pam,
  pamBin,
  portIsOpen,
  repoRoot,
  scratchDir,
  spawnProc,
  startGatewayProc,
  tunnelEnv,
  until,
} from '../support/processes.js';

const has = (command: string, args: string[] = ['--version']) => spawnSync(command, args, { stdio: 'ignore' }).status === 0;

t.test('Type=notify: READY=1 with MAINPID=<pam pid> arrives once the tunnel is usable', async (t) => {
  if (!has('systemd-notify') || !has('python3')) {
    skipBecause(t, 'systemd-notify or python3 is not installed: the notify path cannot be exercised here');
    return;
  }
  const dir = scratchDir(t);
  const socketPath = join(dir, 'notify.sock');
  const received = join(dir, 'notify.log');
  // A fake systemd: an AF_UNIX datagram socket that appends every message to a file.
  const listener = spawnProc(t, 'python3', [
    '-c',
    'import socket,sys\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.bind(sys.argv[1])\nprint("bound",flush=True)\nwhile True:\n  m=s.recv(4096)\n  open(sys.argv[2],"ab").write(m+b"\\n--\\n")',
    socketPath,
    received,
  ]);
  await listener.line(/^bound$/);
  const echo = await echoServer(t);
  const gateway = await startGatewayProc(t, dir, 'notify-token-5a6b7c', { db: echo.port });
  const tunnel = pam(t, ['tunnel', 'start', 'db', '--foreground', '--json'], {
    env: { ...tunnelEnv(dir, 'notify-token-5a6b7c', gateway.url), NOTIFY_SOCKET: socketPath },
  });
  const ready = await tunnel.event('ready');
  await until(() => existsSync(received) && readFileSync(received, 'utf8').includes('READY=1'), 10_000, 'READY=1');
  const message = readFileSync(received, 'utf8');
  t.match(message, new RegExp(`MAINPID=${tunnel.pid}\\b`), 'MAINPID names pam itself');
  t.match(message, /STATUS=listening on 127\.0\.0\.1:\d+ → db/);
  t.ok(await portIsOpen(Number(ready.port)), 'the port was usable when READY=1 was sent');
  tunnel.child.kill('SIGTERM');
  t.equal(await tunnel.exited, 0, 'SIGTERM is the stop contract: exit 0');
});

t.test('the unit files in docs/systemd pass systemd-analyze verify', async (t) => {
  if (!has('systemd-analyze')) {
    skipBecause(t, 'systemd-analyze is not installed');
    return;
  }
  const dir = scratchDir(t);
  const units = readdirSync(join(repoRoot, 'docs/systemd')).filter((name) => name.endsWith('.service'));
  t.ok(units.length >= 2, `units: ${units.join(', ')}`);
  for (const unit of units) {
    // verify checks that ExecStart's binary exists: point it at this checkout's pam.
    const text = readFileSync(join(repoRoot, 'docs/systemd', unit), 'utf8').replaceAll('/usr/local/bin/pam', pamBin);
    const copy = join(dir, unit);
    writeFileSync(copy, text);
    const result = spawnSync('systemd-analyze', ['verify', '--man=no', copy], { encoding: 'utf8' });
    const complaints = `${result.stdout}${result.stderr}`
      .split('\n')
      .filter((line) => line.includes(unit) || /error|invalid|unknown/i.test(line));
    t.same(complaints, [], `${unit}: no complaints`);
    t.equal(result.status, 0, `${unit}: verify exits 0`);
  }
});

t.test("Type=forking: the unit's own ExecStart returns with the port up and PIDFile= naming the owner", async (t) => {
  const unit = readFileSync(join(repoRoot, 'docs/systemd/pam-tunnel-forking.service'), 'utf8');
  const execStart = /^ExecStart=(.*)$/m.exec(unit)![1]!;
  const pidFileSetting = /^PIDFile=(.*)$/m.exec(unit)![1]!;
  const dir = scratchDir(t);
  const echo = await echoServer(t);
  const gateway = await startGatewayProc(t, dir, 'forking-token-8d9e0f', { web: echo.port });
  const env = tunnelEnv(dir, 'forking-token-8d9e0f', gateway.url);
  const port = await freePort();
  // What systemd would substitute: the credential directory, the runtime directory; plus this checkout's pam.
  writeFileSync(join(dir, 'token'), 'forking-token-8d9e0f\n', { mode: 0o600 });
  const substitute = (text: string) =>
    text
      .replaceAll('/usr/local/bin/pam', `"${process.execPath}" "${pamBin}"`)
      .replaceAll('$' + '{CREDENTIALS_DIRECTORY}', dir)
      .replaceAll('/run/pam-tunnel-web', dir)
      .replaceAll('18080', String(port));
  const start = spawnProc(t, 'sh', ['-c', substitute(execStart)], { env: { ...env, PAM_GATEWAY_TOKEN: '' } });
  t.equal(await start.exited, 0, start.stderr);
  const pidFile = substitute(pidFileSetting);
  const pid = Number(readFileSync(pidFile, 'utf8'));
  t.teardown(() => {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  });
  t.ok(await portIsOpen(port), 'the port answers when ExecStart returns');
  process.kill(pid, 'SIGTERM'); // systemctl stop
  await until(() => !existsSync(pidFile), 5_000, 'pid file removal');
  t.notOk(await portIsOpen(port), 'port closed after SIGTERM');
});
