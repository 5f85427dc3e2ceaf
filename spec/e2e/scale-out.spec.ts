// Scale-out end to end, every process real: two `pam broker --redis` sharing one redis-server, two
// gateways of one site (one key), an echo target. A client through broker 2 reaches the gateway on
// broker 1; the gateway carrying a --run tunnel is killed -9 and the tunnel comes back through the
// other. Broker death and Redis outages: scale-out-brokers.spec.ts.

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { startBrokerGateway, startBrokerProc } from '../support/broker.js';
import { pam, scratchDir, tunnelEnv } from '../support/processes.js';
import { haveRedis, startRedis } from '../support/redis.js';
import { cluster, echoScript, expected, health, opens } from '../support/scale-out.js';

const token = 'scale-out-gateway-token';
const needRedis = !haveRedis() && process.env.CI !== 'true';
/**
 * A --run command that fetches through the tunnel in a loop (64 KiB echoed, checked) and prints
 * `fetched N` / `failed N`; once the file `after` exists it needs 3 more good fetches, then exits 0
 * (1 if 60 s pass first).
 */
function loopScript(dir: string): { command: string; after: string } {
  const after = join(dir, 'after-failover');
  const file = join(dir, 'fetch-loop.cjs');
  writeFileSync(
    file,
    `const net = require('net'), fs = require('fs'), crypto = require('crypto');
const port = +process.env.PAM_TUNNEL_PORT, deadline = Date.now() + 60000;
let good = 0, bad = 0, goodAfter = 0;
function once() {
  return new Promise((resolve) => {
    const payload = crypto.randomBytes(65536), chunks = [];
    const socket = net.connect(port, '127.0.0.1', () => socket.end(payload));
    socket.setTimeout(5000, () => socket.destroy(new Error('timeout')));
    socket.on('data', (chunk) => chunks.push(chunk));
    socket.on('error', () => resolve(false));
    socket.on('close', () => resolve(Buffer.concat(chunks).equals(payload)));
  });
}
(async () => {
  while (Date.now() < deadline) {
    const marked = fs.existsSync(${JSON.stringify(after)});
    if (await once()) { good += 1; if (marked) goodAfter += 1; console.log('fetched ' + good + (marked ? ' after' : '')); }
    else { bad += 1; console.log('failed ' + bad); }
    if (goodAfter >= 3) process.exit(0);
    await new Promise((resolve) => setTimeout(resolve, 150));
  }
  process.exit(1);
})();
`,
  );
  return { command: `"${process.execPath}" "${file}"`, after };
}

t.test(
  'two brokers over Redis, two gateways of one site: cross-broker routing, then the gateway carrying a --run tunnel is killed -9',
  { skip: needRedis ? 'redis-server is not installed (CI installs it)' : false },
  async (t) => {
    const { dir, echo, b1, b2, keyFile, env } = await cluster(t);
    // Gateway A prefers broker 1, gateway B broker 2; both fail over to the other.
    const a = await startBrokerGateway(
      t,
      dir,
      token,
      `${b1.url},${b2.url}`,
      'lab',
      { echo: echo.port },
      { extra: ['--key-file', keyFile], env, timeoutMs: 60_000 },
    );
    t.equal(a.url, `${b1.url}/sites/lab`, 'gateway A registered at broker 1');
    const clientEnv = { ...tunnelEnv(dir, token), ...env };

    // 1. A client through broker 2 reaches the only gateway, registered at broker 1.
    const viaB2 = pam(t, ['tunnel', 'start', 'echo', '-R', echoScript, '--gateway', `${b2.url}/sites/lab`], { env: clientEnv });
    t.equal(await viaB2.exited, 0, viaB2.stderr);
    t.equal(viaB2.stdout, expected, '256 KiB echoed intact: broker 2 → Redis → broker 1 → gateway A');
    t.equal(opens(a.proc), 1, 'gateway A carried it');
    const relayed = await health(b2.url);
    t.match(relayed, { redis: 'up', gateways: 0 });
    t.ok(Number(relayed.exchanges) >= 1 && relayed.forwarded === relayed.exchanges, 'broker 2 relayed every exchange to broker 1');

    const b = await startBrokerGateway(
      t,
      dir,
      token,
      `${b2.url},${b1.url}`,
      'lab',
      { echo: echo.port },
      { extra: ['--key-file', keyFile], env, timeoutMs: 60_000 },
    );
    t.equal(b.url, `${b2.url}/sites/lab`, 'gateway B registered at broker 2, with the same key');
    t.equal(b.key, a.key);

    // 2. kill -9 the gateway carrying a --run tunnel: the tunnel reconnects through the other one.
    const site = `${b1.url}/sites/lab,${b2.url}/sites/lab`;
    const loop = loopScript(dir);
    const run = pam(t, ['tunnel', 'start', 'echo', '--json', '--reconnect-attempts', '10', '-R', loop.command, '--gateway', site], {
      env: clientEnv,
    });
    const before = { a: opens(a.proc), b: opens(b.proc) };
    await run.line(/^fetched 2/m, 30_000);
    const carrier = opens(a.proc) > before.a ? a : b;
    const other = carrier === a ? b : a;
    t.equal(opens(carrier.proc) - (carrier === a ? before.a : before.b), 1, 'one gateway carries the tunnel');
    const otherBefore = opens(other.proc);
    carrier.proc.child.kill('SIGKILL');
    await carrier.proc.exited;
    await run.line(/reconnected/, 40_000);
    t.equal(opens(other.proc), otherBefore + 1, 'the tunnel came back through the other gateway of the site');
    writeFileSync(loop.after, '');
    t.equal(await run.exited, 0, `the --run command kept running and finished 0\n${run.stderr}`);
    t.match(run.stdout, /fetched \d+ after/, 'it fetched after the failover');
    const id = String((await run.event('stopped')).id);
    const timeline = pam(t, ['tunnel', 'history', id, '--json'], { env: clientEnv });
    t.equal(await timeline.exited, 0, timeline.stderr);
    const entries = JSON.parse(timeline.stdout) as Array<{ event: { type: string }; state: string }>;
    const lost = entries.findIndex((entry) => entry.event.type === 'link.lost');
    t.ok(lost >= 0, 'history shows the link lost');
    const later = entries.slice(lost);
    const reconnecting = later.findIndex((entry) => /reconnecting/.test(entry.state));
    t.ok(reconnecting >= 0, 'history shows the reconnect attempt');
    t.ok(
      later.slice(reconnecting).some((entry) => /runningCommand\.linked/.test(entry.state)),
      `history shows the tunnel linked again: ${later.map((entry) => entry.state).join(' → ')}`,
    );

    t.notMatch(`${b1.proc.stderr}${b2.proc.stderr}`, new RegExp(token), 'no gateway token in broker logs');
  },
);

t.test(
  'the Redis password comes from PAM_REDIS_PASSWORD and is never printed; a wrong one is refused with exit 2',
  { skip: needRedis ? 'redis-server is not installed (CI installs it)' : false },
  async (t) => {
    const dir = scratchDir(t);
    const password = 'redis-pw-0f3b9c2d7e';
    const redis = await startRedis(t, dir, ['--requirepass', password]);
    const broker = await startBrokerProc(t, dir, ['--redis', redis.url], { PAM_REDIS_PASSWORD: password });
    t.match(await health(broker.url), { redis: 'up' });
    const inUrl = await startBrokerProc(t, dir, ['--redis', `redis://:${password}@127.0.0.1:${redis.port}/0`]);
    t.match(await health(inUrl.url), { redis: 'up' }, 'or in the URL userinfo');
    const wrong = pam(t, ['broker', '--listen', '127.0.0.1:0', '--redis', `redis://:not-${password}@127.0.0.1:${redis.port}`], {
      env: { ...tunnelEnv(dir, 'unused'), PAM_BROKER_TOKEN: 'broker-token-long-enough' },
    });
    t.equal(await wrong.exited, 2, wrong.stderr);
    t.match(wrong.stderr, /refused the credentials .*set PAM_REDIS_PASSWORD/);
    for (const proc of [broker.proc, inUrl.proc, wrong]) {
      t.notMatch(`${proc.stdout}${proc.stderr}`, new RegExp(password), 'the password is never printed');
    }
  },
);
