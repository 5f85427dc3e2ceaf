// The NAT lab (issue 17): a client and a gateway behind NAT routers with nothing forwarded in, a
// broker and coturn on a public segment, real `pam` processes in each namespace (spec/support/nat-lab.ts).
// Each tunnel case asserts the bytes (sha256 both ways) and the path the tunnel took.

import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { labAvailable } from '../support/netns.js';
import { exchangePeer, natLab, type NatLab, type NatLabOptions } from '../support/nat-lab.js';
import { pamBin } from '../support/processes.js';
import type { TapTest } from '../support/tap.js';

const bytesEachWay = 1024 * 1024;

async function siteWithTarget(t: TapTest, nat: NatLab) {
  const broker = await nat.startBroker();
  const target = nat.lab.spawn(t, nat.ns.gateway, process.execPath, [exchangePeer, 'serve', nat.gatewayHost, String(bytesEachWay)]);
  const targetPort = Number((await target.event('listening')).port);
  const gateway = await nat.startGateway(broker.url, targetPort);
  return { broker, target, gateway };
}

async function tunnelThrough(t: TapTest, options: NatLabOptions, expectedPath: 'direct' | 'relay', startArgs: readonly string[] = []) {
  const nat = natLab(t, options);
  if (!nat) return;
  const coturn = await nat.startCoturn();
  const { target, gateway } = await siteWithTarget(t, nat);
  const tunnel = nat.lab.spawn(
    t,
    nat.ns.client,
    process.execPath,
    [pamBin, 'tunnel', 'start', 'sink', '-fg', '--json', '--timeout', '30', ...startArgs],
    {
      env: nat.clientEnv(gateway.url, gateway.key),
    },
  );
  const outcome = await Promise.race([
    tunnel.event('ready', 60_000).then((ready) => ({ ready })),
    tunnel.exited.then((code) => ({ code })),
  ]);
  if (!('ready' in outcome)) {
    t.fail(`pam tunnel start exited ${outcome.code} before it was ready`, {
      stderr: tunnel.stderr,
      gateway: gateway.proc.stderr,
      coturn: coturn.stdout.slice(-4000),
    });
    return;
  }
  const user = nat.lab.spawn(t, nat.ns.client, process.execPath, [
    exchangePeer,
    'connect',
    '127.0.0.1',
    String(outcome.ready.port),
    String(bytesEachWay),
  ]);
  const [atClient, atTarget] = await Promise.all([user.event('exchanged', 60_000), target.event('exchanged', 60_000)]);
  t.equal(atTarget.received, atClient.sent, 'client → target: sha256-equal');
  t.equal(atClient.received, atTarget.sent, 'target → client: sha256-equal');
  t.equal(atClient.receivedBytes, bytesEachWay, 'every byte came back');
  t.equal(outcome.ready.path, expectedPath, `path ${expectedPath} (${String(outcome.ready.pair)})`);
  t.match(gateway.proc.stderr, new RegExp(`tunnel to sink open \\(path ${expectedPath}: `), 'the gateway logs the selected pair');
  const env = nat.clientEnv(gateway.url, gateway.key);
  const listed = nat.lab.spawn(t, nat.ns.client, process.execPath, [pamBin, 'tunnel', 'list', '--json'], { env });
  t.equal(await listed.exited, 0);
  t.match(JSON.parse(listed.stdout), [{ id: outcome.ready.id, path: expectedPath }], '`pam tunnel list --json` shows the path');
  const table = nat.lab.spawn(t, nat.ns.client, process.execPath, [pamBin, 'tunnel', 'list'], { env });
  await table.exited;
  t.match(table.stdout, new RegExp(`\\s${expectedPath}\\n`), 'and so does the table');
  const journal = readFileSync(join(String(env.PAM_TUNNEL_REGISTRY), 'journal', `${String(outcome.ready.id)}.jsonl`), 'utf8');
  t.match(journal, new RegExp(`"path":\\{"kind":"${expectedPath}","pair":"[^"]+"\\}`), 'the journal records the selected pair');
  tunnel.child.kill('SIGTERM');
  t.equal(await tunnel.exited, 0);
}

if (labAvailable(t)) {
  t.test('1. both NATs cone-like: the tunnel works, path direct', (t) =>
    tunnelThrough(t, { clientNat: 'cone', gatewayNat: 'cone' }, 'direct'),
  );

  t.test("2. the gateway's NAT symmetric: path relay through coturn", (t) =>
    tunnelThrough(t, { clientNat: 'cone', gatewayNat: 'symmetric' }, 'relay'),
  );

  t.test("3. the client's UDP blocked by its router: TURN over TCP still works (werift), path relay", (t) =>
    tunnelThrough(t, { clientNat: 'cone', gatewayNat: 'cone', clientUdpBlocked: true }, 'relay', ['--transport', 'werift']),
  );

  t.test('4. the broker killed mid-tunnel: bytes keep flowing; restarted, the gateway re-registers and a new tunnel works', async (t) => {
    const nat = natLab(t, { clientNat: 'cone', gatewayNat: 'cone' });
    if (!nat) return;
    await nat.startCoturn();
    const { broker, target, gateway } = await siteWithTarget(t, nat);
    const env = nat.clientEnv(gateway.url, gateway.key);
    const tunnel = nat.lab.spawn(
      t,
      nat.ns.client,
      process.execPath,
      [pamBin, 'tunnel', 'start', 'sink', '-fg', '--json', '--timeout', '30'],
      { env },
    );
    const ready = await tunnel.event('ready', 60_000);
    broker.proc.child.kill('SIGKILL');
    await broker.proc.exited;
    await gateway.proc.line(/lost the broker .*re-registering/, 30_000);
    const user = nat.lab.spawn(t, nat.ns.client, process.execPath, [
      exchangePeer,
      'connect',
      '127.0.0.1',
      String(ready.port),
      String(bytesEachWay),
    ]);
    const [atClient, atTarget] = await Promise.all([user.event('exchanged', 60_000), target.event('exchanged', 60_000)]);
    t.equal(atTarget.received, atClient.sent, 'with the broker down: client → target sha256-equal');
    t.equal(atClient.received, atTarget.sent, 'with the broker down: target → client sha256-equal');

    await nat.startBroker(broker.port);
    await gateway.proc.event('reregistered', 30_000);
    const fresh = nat.lab.spawn(
      t,
      nat.ns.client,
      process.execPath,
      [pamBin, 'tunnel', 'start', 'sink', '-fg', '--json', '--timeout', '30'],
      { env },
    );
    const again = await fresh.event('ready', 60_000);
    t.ok(Number(again.port) > 0, 'a new tunnel is ready after the broker came back');
    t.match(again.path, /^(direct|relay)$/);
    fresh.child.kill('SIGTERM');
    t.equal(await fresh.exited, 0);
    tunnel.child.kill('SIGTERM');
    t.equal(await tunnel.exited, 0, 'the first tunnel stopped cleanly');
  });

  t.test('5. coturn stopped, the gateway behind a symmetric NAT: start fails naming ICE, within --timeout', async (t) => {
    const nat = natLab(t, { clientNat: 'cone', gatewayNat: 'symmetric' });
    if (!nat) return;
    const { gateway } = await siteWithTarget(t, nat);
    const tunnel = nat.lab.spawn(
      t,
      nat.ns.client,
      process.execPath,
      [pamBin, 'tunnel', 'start', 'sink', '-R', 'echo ran', '--timeout', '12'],
      {
        env: nat.clientEnv(gateway.url, gateway.key),
      },
    );
    const code = await tunnel.exited;
    t.ok(code === 69 || code === 124, `exit ${code} (69 or 124)`);
    t.match(tunnel.stderr, /ICE/, 'the reason names ICE');
    t.notMatch(tunnel.stdout, /ran/, 'the command never ran');
  });

  t.test('6. a wrong pinned key: 77 before any tunnel, nothing left behind', async (t) => {
    const nat = natLab(t, { clientNat: 'cone', gatewayNat: 'cone' });
    if (!nat) return;
    const { gateway } = await siteWithTarget(t, nat);
    const env = { ...nat.clientEnv(gateway.url, `SHA256:${'C'.repeat(43)}`) };
    const tunnel = nat.lab.spawn(t, nat.ns.client, process.execPath, [pamBin, 'tunnel', 'start', 'sink', '-R', 'echo ran'], { env });
    t.equal(await tunnel.exited, 77);
    t.match(tunnel.stderr, new RegExp(`presents key ${gateway.key.replace(/[+/]/g, '\\$&')}, but PAM_GATEWAY_KEY pins SHA256:C{43}`));
    t.notMatch(tunnel.stdout, /ran/);
    const registry = String(env.PAM_TUNNEL_REGISTRY);
    t.same(existsSync(registry) ? readdirSync(registry).filter((name) => name.endsWith('.json')) : [], [], 'no registry entry');
    t.notOk(existsSync(join(nat.dir, 'config', 'pam', 'known_gateways')), 'nothing recorded');
    t.notMatch(gateway.proc.stderr, /tunnel to sink/, 'the gateway never saw an offer');
  });
}
