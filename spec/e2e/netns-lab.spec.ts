// The network lab itself (spec/support/netns.ts): a bridge carries bytes between its members,
// processes really run inside their namespace, only 198.18.0.0/15 is accepted, and teardown deletes
// everything, processes included, also when building the lab failed half-way.

import { execFileSync } from 'node:child_process';
import { readlinkSync, statSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { labAvailable, netLab, type Namespace } from '../support/netns.js';
import { isAlive, repoRoot } from '../support/processes.js';

const exchangePeer = join(repoRoot, 'build', 'spec', 'support', 'exchange-peer.js');
const inNamespace = (pid: number, ns: Namespace) => statSync(`/proc/${pid}/ns/net`).ino === statSync(`/run/netns/${ns.name}`).ino;

if (labAvailable(t)) {
  t.test('a bridge joins three namespaces: bytes cross it both ways intact', async (t) => {
    const lab = netLab(t)!;
    const hub = lab.namespace('hub');
    const [a, b, c] = [lab.namespace('a'), lab.namespace('b'), lab.namespace('c')];
    lab.bridge(hub, [
      { ns: a, address: '198.18.1.1/24' },
      { ns: b, address: '198.18.1.2/24' },
      { ns: c, address: '198.18.1.3/24' },
    ]);
    for (const [from, to] of [
      [b, '198.18.1.1'],
      [c, '198.18.1.1'],
    ] as const) {
      const server = lab.spawn(t, a, process.execPath, [exchangePeer, 'serve', to, '65536']);
      const port = String((await server.event('listening')).port);
      const client = lab.spawn(t, from, process.execPath, [exchangePeer, 'connect', to, port, '65536']);
      const [atClient, atServer] = await Promise.all([client.event('exchanged'), server.event('exchanged')]);
      t.equal(atServer.received, atClient.sent, `${from.name} → ${to}`);
      t.equal(atClient.received, atServer.sent, `${to} → ${from.name}`);
      server.child.kill('SIGTERM');
      await server.exited;
    }
  });

  t.test('spawn runs the command itself inside the namespace (no shell or ip in between)', async (t) => {
    const lab = netLab(t)!;
    const ns = lab.namespace('only');
    const sleeper = lab.spawn(t, ns, 'sleep', ['30']);
    await new Promise((resolve) => setTimeout(resolve, 200));
    t.match(readlinkSync(`/proc/${sleeper.pid}/exe`), /\/sleep$/, 'the pid is the command');
    t.ok(inNamespace(sleeper.pid, ns), "it is in the lab's namespace");
    t.notOk(inNamespace(process.pid, ns), 'the test itself is not');
  });

  t.test('only addresses inside 198.18.0.0/15 are accepted, before anything is created', async (t) => {
    const lab = netLab(t)!;
    const [a, b] = [lab.namespace('a'), lab.namespace('b')];
    t.throws(() => lab.link(a, '10.0.0.1/24', b, '198.18.0.2/24'), /10\.0\.0\.1\/24 is not a CIDR inside 198\.18\.0\.0\/15/);
    t.throws(() => lab.link(a, '198.20.0.1/24', b, '198.18.0.2/24'), /not a CIDR inside/);
    t.equal(lab.ip(a, '-br', 'link').includes('pl'), false, 'no veth was made');
  });

  t.test('teardown deletes a lab that failed half-way, with the processes inside it', async (t) => {
    const made: { names: string[]; pid: number } = { names: [], pid: 0 };
    await t.test('a lab whose building throws after two namespaces, a link and a process', async (t) => {
      const lab = netLab(t)!;
      const [a, b] = [lab.namespace('a'), lab.namespace('b')];
      made.names = [a.name, b.name];
      lab.link(a, '198.18.2.1/24', b, '198.18.2.2/24');
      made.pid = lab.spawn(t, a, 'sleep', ['30']).pid;
      t.throws(() => lab.ip(a, 'route', 'add', '198.19.0.0/16', 'via', '198.18.9.9'), /ip -n .* route add/);
    });
    const left = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
    t.same(
      made.names.filter((name) => left.includes(name)),
      [],
      'no namespace is left',
    );
    t.notOk(isAlive(made.pid), 'the process inside is gone');
  });
}
