// Scale-out end to end, every process real: two `pam broker --redis` sharing one redis-server, two
// gateways of one site (one key), an echo target. A client through broker 2 reaches the gateway on
// broker 1; the gateway carrying a --run tunnel is killed -9 and the tunnel comes back through the
// other; broker 1 is killed and its gateway moves to broker 2, then it rejoins; Redis stops (brokers
// route for their own gateways, 503 naming Redis for the rest) and comes back (full routing).

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { startBrokerGateway, startBrokerProc } from '../support/broker.js';
import { echoServer, pam, type Proc, type Teardownable, scratchDir, sha256, tunnelEnv, until } from '../support/processes.js';
import { haveRedis, startRedis } from '../support/redis.js';

const token = 'scale-out-gateway-token';
const needRedis = !haveRedis() && process.env.CI !== 'true';
/** Sends 256 KiB through the tunnel and prints the sha256 of what came back. */
const echoScript = `"${process.execPath}" -e 'const p=require("crypto").createHash("sha256");const b=Buffer.alloc(262144,7);let n=0;const s=require("net").connect(+process.env.PAM_TUNNEL_PORT,"127.0.0.1",()=>s.end(b));s.on("data",d=>{p.update(d);n+=d.length});s.on("end",()=>{process.stdout.write(p.digest("hex"));process.exitCode=n===262144?0:5})'`;
const expected = sha256(Buffer.alloc(262144, 7));

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

async function health(url: string): Promise<Record<string, unknown>> {
  return (await (await fetch(`${url}/healthz`)).json()) as Record<string, unknown>;
}

/** Which of the gateways logged the most recent tunnel open (the one carrying a new tunnel). */
function opens(proc: Proc): number {
  return proc.stderr.split('\n').filter((line) => /tunnel to echo open/.test(line)).length;
}

async function cluster(t: Teardownable) {
  const dir = scratchDir(t);
  const echo = await echoServer(t);
  const redis = await startRedis(t, dir);
  const brokerArgs = ['--redis', redis.url];
  const b1 = await startBrokerProc(t, dir, brokerArgs);
  const b2 = await startBrokerProc(t, dir, brokerArgs);
  const keyFile = join(dir, 'site.key');
  const env = { PAM_KEEPALIVE_TIMEOUT: '2' };
  return { dir, echo, redis, b1, b2, keyFile, env, brokerArgs };
}

t.test(
  'two brokers over Redis, two gateways of one site: cross-broker routing, gateway kill -9 under a --run tunnel, broker death and return, Redis down and back',
  { skip: needRedis ? 'redis-server is not installed (CI installs it)' : false },
  async (t) => {
    const { dir, echo, redis, b1, b2, keyFile, env, brokerArgs } = await cluster(t);
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

    // Restart the killed gateway so the site has two again (same broker preference).
    const restarted = await startBrokerGateway(
      t,
      dir,
      token,
      carrier === a ? `${b1.url},${b2.url}` : `${b2.url},${b1.url}`,
      'lab',
      { echo: echo.port },
      { extra: ['--key-file', keyFile], env, timeoutMs: 60_000 },
    );
    const onB1 = carrier === a ? restarted : other;

    // 3. Kill broker 1: its gateway re-registers at broker 2; new tunnels through the list work.
    b1.proc.child.kill('SIGKILL');
    await b1.proc.exited;
    await onB1.proc.event('reregistered', 10_000);
    t.match(onB1.proc.stdout, new RegExp(`"event":"reregistered","broker":"${b2.url.replace(/[.]/g, '\\.')}"`), 'moved to broker 2');
    const afterDeath = pam(t, ['tunnel', 'start', 'echo', '-R', echoScript, '--gateway', site], { env: clientEnv });
    t.equal(await afterDeath.exited, 0, afterDeath.stderr);
    t.equal(afterDeath.stdout, expected, 'a new tunnel through the list works with broker 1 dead');
    t.match(await health(b2.url), { gateways: 2 });

    // …and broker 1 restarted on its port rejoins: it routes to gateways at broker 2 through Redis.
    const b1again = await startBrokerProc(t, dir, [...brokerArgs, '--listen', `127.0.0.1:${b1.port}`]);
    const rejoined = pam(t, ['tunnel', 'start', 'echo', '-R', echoScript, '--gateway', `${b1again.url}/sites/lab`], { env: clientEnv });
    t.equal(await rejoined.exited, 0, rejoined.stderr);
    t.equal(rejoined.stdout, expected, 'broker 1 is back in the cluster');
    t.match(await health(b1again.url), { redis: 'up', gateways: 0 });

    // 4. Redis stops: broker 1 has no gateway of its own → 503 naming Redis; broker 2 serves its own.
    await redis.stop();
    await until(async () => (await health(b1again.url)).redis === 'down', 10_000, 'broker 1 to notice Redis is gone');
    const degraded = pam(
      t,
      ['tunnel', 'start', 'echo', '-R', 'true', '--reconnect-attempts', '0', '--gateway', `${b1again.url}/sites/lab`],
      {
        env: clientEnv,
      },
    );
    t.equal(await degraded.exited, 69, 'no route without Redis: gatewayUnreachable');
    t.match(degraded.stderr, /HTTP 503: .*Redis redis:\/\/127\.0\.0\.1:\d+ is unreachable/, 'the client is told Redis is the cause');
    const local = pam(t, ['tunnel', 'start', 'echo', '-R', echoScript, '--gateway', `${b2.url}/sites/lab`], { env: clientEnv });
    t.equal(await local.exited, 0, local.stderr);
    t.equal(local.stdout, expected, 'broker 2 still routes to its own gateways');
    const listed = pam(t, ['tunnel', 'start', 'echo', '-R', echoScript, '--gateway', `${b1again.url}/sites/lab,${b2.url}/sites/lab`], {
      env: clientEnv,
    });
    t.equal(await listed.exited, 0, listed.stderr);
    t.equal(listed.stdout, expected, 'a client listing both brokers moves on past the 503');
    t.match(b1again.proc.stderr, /lost Redis redis:\/\/127\.0\.0\.1:\d+: routing only for this broker's own gateways/);

    // 5. Redis back (empty): brokers re-publish their gateways, routing across brokers again.
    await redis.start();
    await until(async () => (await health(b1again.url)).redis === 'up', 15_000, 'broker 1 to reach Redis again');
    const healed = pam(t, ['tunnel', 'start', 'echo', '-R', echoScript, '--gateway', `${b1again.url}/sites/lab`], { env: clientEnv });
    t.equal(await healed.exited, 0, healed.stderr);
    t.equal(healed.stdout, expected, 'full routing once Redis is back');
    t.notMatch(`${b1again.proc.stderr}${b2.proc.stderr}`, new RegExp(token), 'no gateway token in broker logs');
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
