// The scale-out part of `npm run bench` (alone: `npm run bench -- --only scale-out`): signalling
// exchanges per second through one broker and through two brokers sharing Redis (client at broker 2,
// gateway at broker 1), and failover time: the gateway carrying a tunnel killed -9 → first echoed
// byte through the site's other gateway. Real processes, 127.0.0.1 only, every loop bounded.

import { connect } from 'node:net';
import { join } from 'node:path';
import { createNativeTransport } from '../adapters/native-transport.js';
import { startBrokerGateway, startBrokerProc } from '../spec/support/broker.js';
import { echoServer, pam, scratchDir, tunnelEnv, type Proc, type Teardownable } from '../spec/support/processes.js';
import { startRedis } from '../spec/support/redis.js';

type Record = (name: string, value: number, unit: string, note?: string) => void;

const token = 'bench-scale-out-token-77';
const ice = { hosts: ['127.0.0.1'] };

/** `count` offer → sealed answer exchanges, `parallel` at a time; exchanges per second. */
async function exchangeRate(gateway: string, count: number, parallel: number): Promise<number> {
  const transport = createNativeTransport({ token, ice });
  // Untimed first round: JIT, the WebRTC library's threads, the brokers' first Redis round trips.
  for (let warm = 0; warm < parallel; warm += 1)
    await (await transport.negotiate({ gateway, target: 'echo', signal: AbortSignal.timeout(30_000) })).close();
  let next = 0;
  const started = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (next < count) {
        next += 1;
        const negotiation = await transport.negotiate({ gateway, target: 'echo', signal: AbortSignal.timeout(30_000) });
        await negotiation.close();
      }
    }),
  );
  return count / (Number(process.hrtime.bigint() - started) / 1e9);
}

/** One byte echoed on a fresh connection, within `ms`; false if the connection fails or stays silent. */
function echoOnce(port: number, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1', () => socket.write('x'));
    const timer = setTimeout(() => socket.destroy(), ms);
    socket.once('data', () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => undefined);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(false);
    });
  });
}

const opens = (proc: Proc) => proc.stderr.split('\n').filter((line) => /tunnel to echo open/.test(line)).length;

export async function scaleOut(scope: Teardownable, record: Record): Promise<void> {
  const dir = scratchDir(scope, 'pam-bench-');
  const echo = await echoServer(scope);
  const redis = await startRedis(scope, dir);
  const keyFile = join(dir, 'site.key');
  const gatewayExtra = ['--key-file', keyFile, '--max-tunnels-per-client', '1000'];

  // One broker, in memory.
  const single = await startBrokerProc(scope, dir);
  await startBrokerGateway(scope, dir, token, single.url, 'lab', { echo: echo.port }, { extra: gatewayExtra });
  const count = 100;
  record('exchanges/s through one broker', await exchangeRate(`${single.url}/sites/lab`, count, 8), '/s', `${count} offers, 8 at a time`);

  // Two brokers over Redis: the client asks broker 2, the only gateway is at broker 1.
  const b1 = await startBrokerProc(scope, dir, ['--redis', redis.url]);
  const b2 = await startBrokerProc(scope, dir, ['--redis', redis.url]);
  const first = await startBrokerGateway(scope, dir, token, `${b1.url},${b2.url}`, 'ha', { echo: echo.port }, { extra: gatewayExtra });
  record(
    'exchanges/s through two brokers over Redis',
    await exchangeRate(`${b2.url}/sites/ha`, count, 8),
    '/s',
    `${count} offers at broker 2, gateway at broker 1`,
  );

  // Failover: a foreground tunnel over the site's two gateways; kill -9 the one carrying it, 3 rounds.
  const keepalive = '2';
  const env = { PAM_KEEPALIVE_TIMEOUT: keepalive };
  const gateways = [
    first,
    await startBrokerGateway(scope, dir, token, `${b2.url},${b1.url}`, 'ha', { echo: echo.port }, { extra: gatewayExtra, env }),
  ];
  const tunnel = pam(scope, ['tunnel', 'start', 'echo', '-fg', '--json', '--reconnect-attempts', '20'], {
    env: { ...tunnelEnv(dir, token, `${b1.url}/sites/ha,${b2.url}/sites/ha`), ...env },
  });
  const port = Number((await tunnel.event('ready', 60_000)).port);
  const times: number[] = [];
  for (let round = 0; round < 3; round += 1) {
    if (!(await echoOnce(port, 5_000))) throw new Error('the tunnel does not echo before the failover');
    // The carrier is the gateway that logged the latest open; with ties, the one that opened last.
    const carrier = gateways.reduce((best, gateway) => (opens(gateway.proc) > opens(best.proc) ? gateway : best));
    const index = gateways.indexOf(carrier);
    const killed = process.hrtime.bigint();
    carrier.proc.child.kill('SIGKILL');
    await carrier.proc.exited;
    const deadline = Date.now() + 60_000;
    while (!(await echoOnce(port, 1_000))) {
      if (Date.now() > deadline) throw new Error('no byte through the other gateway within 60 s');
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    times.push(Number(process.hrtime.bigint() - killed) / 1e6);
    // The killed one comes back (same key), so the next round can kill whichever now carries it.
    const brokers = index === 0 ? `${b1.url},${b2.url}` : `${b2.url},${b1.url}`;
    gateways[index] = await startBrokerGateway(scope, dir, token, brokers, 'ha', { echo: echo.port }, { extra: gatewayExtra, env });
  }
  times.sort((a, b) => a - b);
  record(
    'failover: gateway killed → first byte through another',
    times[1]!,
    'ms',
    `median of 3 (${times.map((ms) => Math.round(ms)).join(', ')}); PAM_KEEPALIVE_TIMEOUT=${keepalive} s detects the loss`,
  );
  tunnel.child.kill('SIGTERM');
  await tunnel.exited;
}
