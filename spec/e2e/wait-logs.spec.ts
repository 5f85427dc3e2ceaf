// `pam tunnel wait` and `pam tunnel logs` against tunnels other processes own: waiting for a -bg
// tunnel that does not exist yet, for one to go, for one that fails, and at the timeout; reading and
// following a background owner's log until its tunnel is stopped.

import { readFileSync } from 'node:fs';
import t from 'tap';
import {
  backgroundTunnel,
  echoServer,
  pam,
  roundTrip,
  scratchDir,
  sha256,
  randomPayload,
  silentGateway,
  startGatewayProc,
  tunnelEnv,
  until,
} from '../support/processes.js';

const token = 'wait-logs-token-5b21';

async function setup(t: Parameters<typeof scratchDir>[0]) {
  const dir = scratchDir(t);
  const echo = await echoServer(t);
  const gateway = await startGatewayProc(t, dir, token, { echo: echo.port });
  return { dir, env: tunnelEnv(dir, token, gateway.url) };
}

t.test('wait for a -bg tunnel another process starts; logs, --tail; logs -f and wait --for gone end with stop', async (t) => {
  const { env } = await setup(t);
  // Waiting before the tunnel exists: it may be starting elsewhere.
  const waiting = pam(t, ['tunnel', 'wait', 'echo', '--timeout', '30', '--json'], { env });
  await until(() => waiting.child.pid !== undefined, 5_000, 'wait started');
  const tunnel = await backgroundTunnel(t, env, 'echo');
  t.equal(await waiting.exited, 0, `wait: ${waiting.stderr}`);
  t.match(JSON.parse(waiting.stdout), { id: tunnel.id, for: 'ready', reached: true, exitCode: 0 }, 'wait names the tunnel it saw ready');
  const payload = randomPayload(256 * 1024);
  t.equal(sha256(await roundTrip(tunnel.port, payload)), sha256(payload), 'the tunnel it waited for carries bytes');

  const again = pam(t, ['tunnel', 'wait', String(tunnel.port)], { env });
  t.equal(await again.exited, 0, 'already ready: by port, at once');
  t.match(again.stdout, new RegExp(`tunnel ${tunnel.id} is ready`));

  const logs = pam(t, ['tunnel', 'logs', tunnel.id], { env });
  t.equal(await logs.exited, 0, logs.stderr);
  t.equal(logs.stdout, readFileSync(tunnel.logFile, 'utf8'), 'logs prints the owner log as it is');
  t.match(logs.stdout, new RegExp(`"event":"ready","id":"${tunnel.id}"`), 'which holds its ready line');
  const tail = pam(t, ['tunnel', 'logs', 'echo', '--tail', '1'], { env });
  t.equal(await tail.exited, 0, tail.stderr);
  const lines = readFileSync(tunnel.logFile, 'utf8').trimEnd().split('\n');
  t.equal(tail.stdout, `${lines.at(-1)}\n`, '--tail 1 is the last line');

  const follow = pam(t, ['tunnel', 'logs', tunnel.id, '-f'], { env });
  const gone = pam(t, ['tunnel', 'wait', tunnel.id, '--for', 'gone', '--timeout', '30'], { env });
  await follow.line(/"event":"ready"/);
  t.equal(follow.child.exitCode, null, 'logs -f keeps following while the tunnel runs');
  const stop = pam(t, ['tunnel', 'stop', tunnel.id], { env });
  t.equal(await stop.exited, 0, stop.stderr);
  t.equal(await gone.exited, 0, `wait --for gone: ${gone.stderr}`);
  t.match(gone.stdout, new RegExp(`tunnel ${tunnel.id} is gone`));
  t.equal(await follow.exited, 0, `logs -f ends with the tunnel: ${follow.stderr}`);
  t.match(follow.stdout, new RegExp(`"event":"stopped","id":"${tunnel.id}","exitCode":0`), 'with the owner’s stopped line');
  t.equal(follow.stdout, readFileSync(tunnel.logFile, 'utf8'), 'having printed the whole log once');

  const ended = pam(t, ['tunnel', 'logs', tunnel.id.slice(0, 6)], { env });
  t.equal(await ended.exited, 0, 'an ended tunnel’s kept log, by id prefix');
  t.equal(ended.stdout, readFileSync(tunnel.logFile, 'utf8'));
  const none = pam(t, ['tunnel', 'wait', tunnel.id, '--for', 'gone'], { env });
  t.equal(await none.exited, 0, 'gone already: 0 at once');
});

t.test('wait: 124 at --timeout; 1 when the tunnel fails while waited for; usage errors', async (t) => {
  const dir = scratchDir(t);
  const silent = await silentGateway(t);
  const env = tunnelEnv(dir, token, silent.url);
  const nothing = pam(t, ['tunnel', 'wait', 'echo', '--timeout', '0.5'], { env });
  t.equal(await nothing.exited, 124, 'nothing ever matches: 124');
  t.match(nothing.stderr, /no tunnel matching 'echo' was not ready within 0.5 s/);

  // A -bg tunnel whose gateway never answers: registered while connecting, then it times out.
  const waiting = pam(t, ['tunnel', 'wait', 'echo', '--timeout', '30'], { env });
  const launcher = pam(t, ['tunnel', 'start', 'echo', '-bg', '--timeout', '2'], { env });
  t.equal(await waiting.exited, 1, `wait: ${waiting.stderr}`);
  t.match(waiting.stderr, /ended before it was ready: see `pam tunnel history [0-9a-f]{8}`/);
  t.equal(await launcher.exited, 124, 'the launcher itself timed out');

  for (const args of [['--for', 'later'], ['--timeout', '-1'], []] as const) {
    const bad = pam(t, ['tunnel', 'wait', ...(args.length === 0 ? [' '] : ['echo', ...args])], { env });
    t.equal(await bad.exited, 2, `usage: ${args.join(' ') || 'blank selector'}`);
  }
});

t.test('logs: a foreground tunnel has no log file (1, pointing to history); nothing matching → 1', async (t) => {
  const { env } = await setup(t);
  const fg = pam(t, ['tunnel', 'start', 'echo', '--json'], { env });
  const ready = await fg.event('ready');
  const logs = pam(t, ['tunnel', 'logs', 'echo'], { env });
  t.equal(await logs.exited, 1);
  t.match(logs.stderr, new RegExp(`tunnel ${ready.id} runs in foreground mode .*see \`pam tunnel history ${ready.id}\``));
  const miss = pam(t, ['tunnel', 'logs', 'nothing'], { env });
  t.equal(await miss.exited, 1);
  t.match(miss.stderr, /no running tunnel matches 'nothing' and no kept log/);
  fg.child.kill('SIGTERM');
  t.equal(await fg.exited, 0);
});
