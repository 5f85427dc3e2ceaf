// Faults a tunnel must survive or report truthfully: signal storms in every state of the machine,
// owners killed with -9, a gateway killed mid-transfer, files that cannot be written.

import { existsSync, mkdirSync, readdirSync, rmdirSync } from 'node:fs';
import { createServer, Socket, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import t from 'tap';
import {
  echoServer,
  freePort,
  pam,
  portIsOpen,
  scratchDir,
  silentGateway,
  sleep,
  startGatewayProc,
  tunnelEnv,
  until,
  type Proc,
  type Teardownable,
} from '../support/processes.js';
import { report } from './tally.js';

const token = 'faults-token-7c3b';
let tried = 0;
let survived = 0;
const fault = (ok: boolean) => {
  tried += 1;
  if (ok) survived += 1;
  return ok;
};

async function world(t: Teardownable) {
  const dir = scratchDir(t);
  const echo = await echoServer(t);
  const gateway = await startGatewayProc(t, dir, token, { echo: echo.port });
  const env = tunnelEnv(dir, token, gateway.url);
  const registry = join(dir, 'registry');
  const entries = () => (existsSync(registry) ? readdirSync(registry).filter((name) => /^\d+\.json$/.test(name)) : []);
  return { dir, echo, gateway, env, registry, entries };
}

/** Three SIGTERMs 20 ms apart; the process must end, with one of `codes`, and leave nothing registered. */
async function storm(_t: Teardownable, proc: Proc, codes: number[], entries: () => string[], port?: number): Promise<boolean> {
  for (let i = 0; i < 3; i += 1) {
    if (proc.child.exitCode !== null) break;
    proc.child.kill('SIGTERM');
    await sleep(20);
  }
  const code = await Promise.race([proc.exited, sleep(15_000).then(() => -1)]);
  await until(() => entries().length === 0, 5_000, 'the registry to forget the tunnel').catch(() => undefined);
  const portClosed = port === undefined || !(await portIsOpen(port));
  return codes.includes(code) && entries().length === 0 && portClosed;
}

t.test('a SIGTERM storm in each state: connecting, ready, runningCommand, stopping', async (t) => {
  const { env, entries } = await world(t);
  const silent = await silentGateway(t);
  const connecting = pam(t, ['tunnel', 'start', 'echo', '--json', '--gateway', silent.url], { env });
  await until(() => silent.connections() > 0, 10_000, 'the signalling request');
  t.ok(fault(await storm(t, connecting, [143], entries)), 'connecting: exits 143, nothing left');

  const ready = pam(t, ['tunnel', 'start', 'echo', '-fg', '--json'], { env });
  const readyPort = Number((await ready.event('ready')).port);
  t.ok(
    fault(await storm(t, ready, [0, 143], entries, readyPort)),
    'ready: exits 0 (or 143 if teardown was cut short), port closed, nothing left',
  );

  const running = pam(t, ['tunnel', 'start', 'echo', '--json', '-R', 'echo started; exec sleep 30'], { env });
  await running.line(/^started$/);
  t.ok(fault(await storm(t, running, [143], entries)), 'runningCommand: the command is terminated, exits 143, nothing left');

  // Stopping: the first SIGTERM starts an orderly stop; the storm's next ones arrive while it runs.
  const stopping = pam(t, ['tunnel', 'start', 'echo', '-fg', '--json'], { env });
  const stoppingPort = Number((await stopping.event('ready')).port);
  stopping.child.kill('SIGTERM');
  t.ok(
    fault(await storm(t, stopping, [0, 143], entries, stoppingPort)),
    'stopping: a second signal cuts teardown short, the process still ends cleanly',
  );
});

t.test('an owner killed with -9: list, pid file check and history tell the truth', async (t) => {
  const { env, entries, dir } = await world(t);
  const pidFile = join(dir, 'owner.pid');
  const owner = pam(t, ['tunnel', 'start', 'echo', '-fg', '--json', '--pid-file', pidFile], { env });
  const id = String((await owner.event('ready')).id);
  owner.child.kill('SIGKILL');
  await owner.exited;
  const listed = pam(t, ['tunnel', 'list', '--json'], { env });
  await listed.exited;
  const history = pam(t, ['tunnel', 'history', '--json'], { env });
  await history.exited;
  const again = pam(t, ['tunnel', 'start', 'echo', '--pid-file', pidFile, '-R', 'true'], { env });
  const rows = JSON.parse(history.stdout) as Array<{ id: string; status: string }>;
  const truthful =
    JSON.parse(listed.stdout).length === 0 &&
    entries().length === 0 &&
    rows.find((row) => row.id === id)?.status === 'died' &&
    (await again.exited) === 0;
  t.ok(fault(truthful), 'not listed, stale entry removed, history says died, its stale pid file does not block a new start');
});

t.test('the gateway killed mid-transfer: the in-flight connection ends cleanly, the tunnel reconnects', async (t) => {
  const dir = scratchDir(t);
  const sink = createServer((socket) => {
    socket.on('error', () => undefined);
    socket.resume();
  });
  t.teardown(() => sink.close());
  await new Promise<void>((resolve) => sink.listen(0, '127.0.0.1', resolve));
  const port = await freePort();
  const env = { ...tunnelEnv(dir, token, `http://127.0.0.1:${port}`), PAM_KEEPALIVE_TIMEOUT: '2' };
  const startGateway = () =>
    pam(t, ['gateway', '--listen', `127.0.0.1:${port}`, '--json', '--target', `sink=127.0.0.1:${(sink.address() as AddressInfo).port}`], {
      env,
    });
  const first = startGateway();
  await first.event('listening');
  const tunnel = pam(t, ['tunnel', 'start', 'sink', '-fg', '--json'], { env });
  const local = Number((await tunnel.event('ready')).port);
  const inFlight = new Socket();
  const ended = new Promise<string>((resolve) => {
    inFlight.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
    inFlight.on('close', () => resolve('closed'));
  });
  inFlight.connect(local, '127.0.0.1', () => {
    const block = Buffer.alloc(64 * 1024);
    const pump = () => {
      while (!inFlight.destroyed && inFlight.write(block));
      if (!inFlight.destroyed) inFlight.once('drain', pump);
    };
    pump();
  });
  await sleep(500);
  first.child.kill('SIGKILL');
  const how = await Promise.race([ended, sleep(20_000).then(() => 'still hanging')]);
  await tunnel.line(/reconnecting/, 20_000);
  const second = startGateway();
  await second.event('listening');
  await tunnel.line(/reconnected/, 60_000);
  const fresh = await new Promise<boolean>((resolve) => {
    const socket = new Socket();
    socket.once('error', () => resolve(false));
    socket.connect(local, '127.0.0.1', () => socket.end('hello', () => resolve(true)));
  });
  t.ok(fault(/ECONNRESET|closed/.test(how) && fresh), `in-flight connection: ${how}; a new connection after the reconnect works: ${fresh}`);
  tunnel.child.kill('SIGTERM');
  await tunnel.exited;
});

t.test('a SIGTERM storm while reconnecting', async (t) => {
  const dir = scratchDir(t);
  const echo = await echoServer(t);
  const port = await freePort();
  const env = { ...tunnelEnv(dir, token, `http://127.0.0.1:${port}`), PAM_KEEPALIVE_TIMEOUT: '2' };
  const gateway = pam(t, ['gateway', '--listen', `127.0.0.1:${port}`, '--json', '--target', `echo=127.0.0.1:${echo.port}`], { env });
  await gateway.event('listening');
  const tunnel = pam(t, ['tunnel', 'start', 'echo', '-fg', '--json'], { env });
  const local = Number((await tunnel.event('ready')).port);
  gateway.child.kill('SIGKILL');
  await tunnel.line(/reconnecting/, 20_000);
  const registry = join(dir, 'registry');
  const entries = () => readdirSync(registry).filter((name) => /^\d+\.json$/.test(name));
  t.ok(fault(await storm(t, tunnel, [0, 143], entries, local)), 'reconnecting: exits, port closed, nothing left');
});

t.test('files that cannot be written: a clear error (73), nothing half-written, nothing left running', async (t) => {
  const { env, registry, entries } = await world(t);
  const badPidFile = pam(t, ['tunnel', 'start', 'echo', '--pid-file', '/proc/pam-cannot-write-here.pid', '-R', 'true'], { env });
  const pidFileCode = await badPidFile.exited;
  t.equal(pidFileCode, 73, badPidFile.stderr);
  t.match(badPidFile.stderr, /cannot write pid file \/proc\/pam-cannot-write-here\.pid/);

  // The registry entry path is taken by a directory: the atomic rename fails (EISDIR), even as root.
  const shell = pam(t, ['shell'], { env, stdin: 'pipe' });
  await until(() => existsSync(join(registry, `${shell.pid}.sock`)), 10_000, 'the shell to start');
  mkdirSync(join(registry, `${shell.pid}.json`));
  shell.child.stdin!.end('tunnel start echo\n');
  const shellCode = await shell.exited;
  rmdirSync(join(registry, `${shell.pid}.json`)); // our obstacle, not something pam left
  t.equal(shellCode, 73, shell.stderr);
  t.match(shell.stderr, /cannot write the registry entry .*EISDIR.*check its permissions and free space/);
  t.notMatch(`${badPidFile.stderr}${shell.stderr}`, /\n\s+at /, 'no stack trace');
  const temps = readdirSync(registry).filter((name) => name.endsWith('.tmp'));
  t.same(temps, [], 'no half-written temp file');
  t.ok(
    fault(pidFileCode === 73 && shellCode === 73 && temps.length === 0 && entries().length === 0),
    'unwritable files are reported, nothing is left behind',
  );
  report(t, { faults: { tried, survived } });
});
