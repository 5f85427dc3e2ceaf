// Scale-out end to end, every process real: two `pam broker --redis` over one redis-server, two
// gateways of one site. Broker 1 is killed -9: its gateway re-registers at broker 2 and new tunnels
// work through the URL list; restarted, broker 1 rejoins. Redis stops: brokers route for their own
// gateways and answer 503 naming Redis for the rest; Redis restarts (empty): full routing again.

import t from 'tap';
import { startBrokerGateway, startBrokerProc } from '../support/broker.js';
import { pam, tunnelEnv, until } from '../support/processes.js';
import { haveRedis } from '../support/redis.js';
import { cluster, echoScript, expected, health } from '../support/scale-out.js';

const token = 'scale-out-brokers-token-8';

t.test(
  'broker 1 dies and comes back; Redis stops and comes back: new tunnels keep working as documented',
  { skip: !haveRedis() && process.env.CI !== 'true' ? 'redis-server is not installed (CI installs it)' : false },
  async (t) => {
    const { dir, echo, redis, b1, b2, keyFile, env, brokerArgs } = await cluster(t);
    const gateway = (brokers: string) =>
      startBrokerGateway(t, dir, token, brokers, 'lab', { echo: echo.port }, { extra: ['--key-file', keyFile], env, timeoutMs: 60_000 });
    const onB1 = await gateway(`${b1.url},${b2.url}`);
    await gateway(`${b2.url},${b1.url}`);
    const clientEnv = { ...tunnelEnv(dir, token), ...env };
    const site = `${b1.url}/sites/lab,${b2.url}/sites/lab`;

    // 1. Kill broker 1: its gateway re-registers at broker 2; new tunnels through the list work.
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

    // 2. Redis stops: broker 1 has no gateway of its own → 503 naming Redis; broker 2 serves its own.
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

    // 3. Redis back (empty): brokers re-publish their gateways, routing across brokers again.
    await redis.start();
    await until(async () => (await health(b1again.url)).redis === 'up', 15_000, 'broker 1 to reach Redis again');
    const healed = pam(t, ['tunnel', 'start', 'echo', '-R', echoScript, '--gateway', `${b1again.url}/sites/lab`], { env: clientEnv });
    t.equal(await healed.exited, 0, healed.stderr);
    t.equal(healed.stdout, expected, 'full routing once Redis is back');
    t.notMatch(`${b1again.proc.stderr}${b2.proc.stderr}`, new RegExp(token), 'no gateway token in broker logs');
  },
);
