// Security properties checked on real processes and files: the token never shows in argv, logs,
// journals or list output; files are private; the listener refuses non-loopback peers by default.

import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { isLoopback } from '../../adapters/loopback.js';
import { listenWarning } from '../../gateway/server.js';
import { backgroundTunnel, echoServer, pam, scratchDir, startGatewayProc, tunnelEnv } from '../support/processes.js';

const token = 'security-token-SECRET-9e8d';

t.test('the token never appears in argv, logs, journals or list output; files are 0600/0700', async (t) => {
  const dir = scratchDir(t);
  const echo = await echoServer(t);
  const gateway = await startGatewayProc(t, dir, token, { echo: echo.port });
  const env = tunnelEnv(dir, token, gateway.url);
  const owner = await backgroundTunnel(t, env, 'echo');
  const argv = [gateway.proc.pid, owner.pid].map((pid) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' '));
  const listed = pam(t, ['tunnel', 'list', '--json'], { env });
  await listed.exited;
  const history = pam(t, ['tunnel', 'history', owner.id, '--json'], { env });
  await history.exited;
  const registry = join(dir, 'registry');
  const journals = readdirSync(join(registry, 'journal')).map((name) => readFileSync(join(registry, 'journal', name), 'utf8'));
  const places: Record<string, string> = {
    'gateway argv': argv[0]!,
    'owner argv': argv[1]!,
    'owner log': readFileSync(owner.logFile, 'utf8'),
    'gateway log': `${gateway.proc.stdout}${gateway.proc.stderr}`,
    'list --json': listed.stdout,
    'history --json': history.stdout,
    journals: journals.join('\n'),
    'registry entry': readFileSync(join(registry, `${owner.pid}.json`), 'utf8'),
  };
  let clean = 0;
  for (const [place, text] of Object.entries(places)) {
    t.ok(text.length > 0, `${place} was read`);
    if (!text.includes(token)) clean += 1;
    t.notOk(text.includes(token), `no token in ${place}`);
  }
  const modes: Array<[string, number]> = [
    [registry, 0o700],
    [join(registry, 'journal'), 0o700],
    [join(registry, 'logs'), 0o700],
    [join(registry, `${owner.pid}.json`), 0o600],
    [owner.logFile, 0o600],
    ...readdirSync(join(registry, 'journal')).map((name): [string, number] => [join(registry, 'journal', name), 0o600]),
  ];
  for (const [path, mode] of modes) t.equal(statSync(path).mode & 0o777, mode, `${path.slice(dir.length)} is ${mode.toString(8)}`);
  process.kill(owner.pid, 'SIGTERM');
  t.equal(clean, Object.keys(places).length);
});

t.test('the listener accepts only loopback peers unless bound elsewhere', async (t) => {
  for (const peer of ['127.0.0.1', '127.8.9.10', '::1', '::ffff:127.0.0.1']) t.ok(isLoopback(peer), `${peer} is loopback`);
  for (const peer of ['10.0.0.1', '192.168.1.5', '::ffff:10.0.0.1', 'fe80::1', '', undefined])
    t.notOk(isLoopback(peer), `${peer} is refused`);
});

t.test('the gateway and the listener agree on loopback: no plain-HTTP warning for ::ffff:127.0.0.1', async (t) => {
  for (const host of ['127.0.0.1', '::1', '::ffff:127.0.0.1', 'localhost'])
    t.equal(listenWarning(host, false), undefined, `${host} is loopback`);
  for (const host of ['0.0.0.0', '::', '::ffff:10.0.0.1', '192.0.2.1'])
    t.match(listenWarning(host, false), /without TLS/, `${host} is not`);
  t.equal(listenWarning('0.0.0.0', true), undefined, 'TLS: no warning');
});

t.test('the --run command receives no PAM_* secret or setting, only PAM_TUNNEL_HOST/PORT/ID and PAM_TUNNEL_PORT_<TARGET>', async (t) => {
  const dir = scratchDir(t);
  const echo = await echoServer(t);
  const gateway = await startGatewayProc(t, dir, token, { echo: echo.port });
  const env = {
    ...tunnelEnv(dir, token, gateway.url),
    PAM_ICE_USERNAME: 'turn-user',
    PAM_ICE_CREDENTIAL: 'turn-SECRET-credential',
    PAM_KEEPALIVE_TIMEOUT: '15',
  };
  const run = pam(t, ['tunnel', 'start', 'echo', '-R', 'env'], { env });
  t.equal(await run.exited, 0);
  const names = run.stdout
    .split('\n')
    .filter((line) => /^PAM_/i.test(line))
    .map((line) => line.slice(0, line.indexOf('=')))
    .sort();
  t.same(
    names,
    ['PAM_TUNNEL_HOST', 'PAM_TUNNEL_ID', 'PAM_TUNNEL_PORT', 'PAM_TUNNEL_PORT_ECHO'],
    `PAM_* in the command's environment: ${names.join(' ')}`,
  );
  t.notOk(run.stdout.includes(token), 'no token in the command environment');
  t.notOk(run.stdout.includes('turn-SECRET-credential'), 'no TURN credential in the command environment');
  t.match(run.stdout, /^PATH=/m, 'the rest of the environment is inherited');
});
