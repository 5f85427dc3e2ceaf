// Load on a scaled-out site: 200 tunnels started at once, spread over two brokers sharing Redis and
// two gateways of one site, each verified with its own bytes while all are open; no broker or
// gateway exceeds its memory bound (RSS read from /proc). The 200 clients are real WebRTC peers
// (node-datachannel) in this test process, so the machine is not also paying for 200 CLI processes.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import type { Socket } from 'node:net';
import { createNativeTransport } from '../../adapters/native-transport.js';
import { createTcpListenerFactory } from '../../adapters/tcp-listener.js';
import type { Link } from '../../machines/ports.js';
import { startBrokerGateway, startBrokerProc } from '../support/broker.js';
import { echoServer, randomPayload, roundTrip, scratchDir, sha256, until } from '../support/processes.js';
import { haveRedis, startRedis } from '../support/redis.js';

const token = 'scale-out-load-token-31';
const tunnels = 200;
/** Resident memory each process may reach with its share of the 200 tunnels (measured: brokers ≈ 90–115 MiB, gateways ≈ 155 MiB). */
const bounds = { broker: 200 * 1024 * 1024, gateway: 320 * 1024 * 1024 };

function rss(pid: number): number {
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(match?.[1] ?? 0) * 1024;
}

const mib = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(0)} MiB`;

t.test(
  `${tunnels} tunnels at once over two brokers and two gateways of a site: each verified, memory bounded`,
  { skip: !haveRedis() && process.env.CI !== 'true' ? 'redis-server is not installed (CI installs it)' : false },
  async (t) => {
    const dir = scratchDir(t);
    const echo = await echoServer(t);
    const redis = await startRedis(t, dir);
    const b1 = await startBrokerProc(t, dir, ['--redis', redis.url]);
    const b2 = await startBrokerProc(t, dir, ['--redis', redis.url]);
    const keyFile = join(dir, 'site.key');
    const gatewayArgs = { extra: ['--key-file', keyFile, '--max-tunnels-per-client', String(tunnels)] };
    const g1 = await startBrokerGateway(t, dir, token, b1.url, 'lab', { echo: echo.port }, gatewayArgs);
    const g2 = await startBrokerGateway(t, dir, token, b2.url, 'lab', { echo: echo.port }, gatewayArgs);
    const ice = { hosts: ['127.0.0.1'] };
    const links: Link<Socket>[] = [];
    const listeners = createTcpListenerFactory();
    t.teardown(async () => {
      await Promise.all(links.map((link) => link.close().catch(() => undefined)));
    });

    // All at once: every tunnel negotiates through one broker first (alternating), with the other listed after it.
    const signal = AbortSignal.timeout(150_000);
    const started = Date.now();
    const results = await Promise.allSettled(
      Array.from({ length: tunnels }, async (_, index) => {
        const order = index % 2 === 0 ? [b1.url, b2.url] : [b2.url, b1.url];
        const gateway = order.map((url) => `${url}/sites/lab`).join(',');
        const transport = createNativeTransport({ token, ice });
        const link = await transport.establish(await transport.negotiate({ gateway, target: 'echo', signal }), signal);
        links.push(link);
        const listener = await listeners.bind('127.0.0.1', 0);
        t.teardown(() => listener.close());
        listener.accept((socket) => link.carry(socket));
        const payload = randomPayload(16 * 1024 + index);
        return sha256(await roundTrip(listener.port, payload)) === sha256(payload);
      }),
    );
    const seconds = (Date.now() - started) / 1000;
    const failures = results.flatMap((result) => (result.status === 'rejected' ? [String(result.reason)] : []));
    t.same(failures.slice(0, 3), [], 'no tunnel failed to come up');
    t.equal(results.filter((result) => result.status === 'fulfilled' && result.value).length, tunnels, `all ${tunnels} verified`);

    const opened = (proc: { stderr: string }) => proc.stderr.split('\n').filter((line) => /tunnel to echo open/.test(line)).length;
    await until(() => opened(g1.proc) + opened(g2.proc) >= tunnels, 10_000, 'both gateways to log every tunnel');
    const spread = { g1: opened(g1.proc), g2: opened(g2.proc) };
    t.ok(spread.g1 >= tunnels / 4 && spread.g2 >= tunnels / 4, `both gateways carry a share (${spread.g1} / ${spread.g2})`);
    const health = await Promise.all(
      [b1, b2].map(async (broker) => (await (await fetch(`${broker.url}/healthz`)).json()) as { exchanges: number; forwarded: number }),
    );
    t.ok(
      health.every((one) => one.exchanges >= tunnels / 4),
      `both brokers answered exchanges (${health.map((one) => one.exchanges).join(' / ')})`,
    );

    const memory = { b1: rss(b1.proc.pid), b2: rss(b2.proc.pid), g1: rss(g1.proc.pid), g2: rss(g2.proc.pid) };
    t.comment(
      `${tunnels} tunnels up and verified in ${seconds.toFixed(1)} s; RSS brokers ${mib(memory.b1)} / ${mib(memory.b2)}, gateways ${mib(memory.g1)} / ${mib(memory.g2)}`,
    );
    t.ok(memory.b1 < bounds.broker && memory.b2 < bounds.broker, `brokers under ${mib(bounds.broker)}`);
    t.ok(memory.g1 < bounds.gateway && memory.g2 < bounds.gateway, `gateways under ${mib(bounds.gateway)}`);
  },
);
