// Every transport pairing (decision 0003) between two hosts, not only on 127.0.0.1 where a candidate
// filter that only loopback survives cannot show (issue 22): the gateway and its target in one network
// namespace, the client in another, joined by a veth pair; real `pam gateway` and `pam tunnel start`
// processes inside them, with and without PAM_ICE_HOSTS set to each side's own address, and distinct
// bytes sent both ways at once, sha256-compared at the far end.

import { join } from 'node:path';
import t from 'tap';
import { labAvailable, netLab } from '../support/netns.js';
import { echoServer, pam, pamBin, repoRoot, scratchDir, tunnelEnv } from '../support/processes.js';

const token = 'two-hosts-token-5e1d';
const gatewayHost = '198.18.0.1';
const clientHost = '198.18.0.2';
const bytesEachWay = 2 * 1024 * 1024;
const exchangePeer = join(repoRoot, 'build', 'spec', 'support', 'exchange-peer.js');
const transports = ['native', 'werift'] as const;

for (const client of labAvailable(t) ? transports : []) {
  for (const gateway of transports) {
    for (const iceHosts of [false, true]) {
      const hostsLabel = iceHosts ? "PAM_ICE_HOSTS set to each side's own address" : 'PAM_ICE_HOSTS unset';
      t.test(`${client} client ↔ ${gateway} gateway on two hosts, ${hostsLabel}: 2 MiB each way intact`, async (t) => {
        const lab = netLab(t);
        if (!lab) return;
        const gatewayNs = lab.namespace('gw');
        const clientNs = lab.namespace('cl');
        lab.link(gatewayNs, `${gatewayHost}/24`, clientNs, `${clientHost}/24`);
        const dir = scratchDir(t);
        const env = (transport: string, host: string): NodeJS.ProcessEnv => ({
          ...tunnelEnv(dir, token),
          PAM_TRANSPORT: transport,
          PAM_ICE_HOSTS: iceHosts ? host : undefined,
        });

        const target = lab.spawn(t, gatewayNs, process.execPath, [exchangePeer, 'serve', gatewayHost, String(bytesEachWay)]);
        const targetPort = Number((await target.event('listening')).port);
        const gatewayArgs = ['gateway', '--listen', `${gatewayHost}:0`, '--json', '--target', `sink=${gatewayHost}:${targetPort}`];
        const gatewayProc = lab.spawn(t, gatewayNs, process.execPath, [pamBin, ...gatewayArgs], { env: env(gateway, gatewayHost) });
        const url = String((await gatewayProc.event('listening')).url);

        // --timeout 20: ICE between two namespaces takes well under a second; a broken path ends in 124.
        const tunnelArgs = ['tunnel', 'start', 'sink', '-fg', '--json', '--timeout', '20'];
        const tunnel = lab.spawn(t, clientNs, process.execPath, [pamBin, ...tunnelArgs], {
          env: { ...env(client, clientHost), PAM_GATEWAY_URL: url },
        });
        const started = Date.now();
        const outcome = await Promise.race([
          tunnel.event('ready', 60_000).then((ready) => ({ ready })),
          tunnel.exited.then((code) => ({ code })),
        ]);
        if (!('ready' in outcome)) {
          t.fail(`pam tunnel start exited ${outcome.code} before it was ready`, { stdout: tunnel.stdout, stderr: tunnel.stderr });
          return;
        }

        t.comment(`ready after ${Date.now() - started} ms`);
        const user = lab.spawn(t, clientNs, process.execPath, [
          exchangePeer,
          'connect',
          '127.0.0.1',
          String(outcome.ready.port),
          String(bytesEachWay),
        ]);
        const [atClient, atTarget] = await Promise.all([user.event('exchanged', 60_000), target.event('exchanged', 60_000)]);
        t.comment(`exchanged after ${Date.now() - started} ms`);
        t.equal(atTarget.receivedBytes, bytesEachWay, 'the target received every byte');
        t.equal(atTarget.received, atClient.sent, 'client → target: sha256-equal');
        t.equal(atClient.receivedBytes, bytesEachWay, 'the client received every byte');
        t.equal(atClient.received, atTarget.sent, 'target → client: sha256-equal');
        t.equal(await user.exited, 0);

        tunnel.child.kill('SIGTERM');
        t.equal(await tunnel.exited, 0, 'the tunnel stops cleanly on SIGTERM');
        gatewayProc.child.kill('SIGTERM');
        t.equal(await gatewayProc.exited, 0, 'the gateway stops cleanly on SIGTERM');
      });
    }
  }
}

t.test('native with several PAM_ICE_HOSTS uses the first and says so, on the gateway and the tunnel', async (t) => {
  const dir = scratchDir(t);
  const echo = await echoServer(t);
  const hosts = { PAM_TRANSPORT: 'native', PAM_ICE_HOSTS: '127.0.0.1,::1' };
  const gateway = pam(t, ['gateway', '--listen', '127.0.0.1:0', '--json', '--target', `echo=127.0.0.1:${echo.port}`], {
    env: { ...tunnelEnv(dir, token), ...hosts },
  });
  const url = String((await gateway.event('listening')).url);
  const warning = /PAM_ICE_HOSTS lists 2 addresses; the native transport binds ICE to one and uses 127\.0\.0\.1 only/;
  t.match(gateway.stderr, warning, 'the gateway warns');
  const tunnel = pam(t, ['tunnel', 'start', 'echo', '-fg', '--json'], { env: { ...tunnelEnv(dir, token, url), ...hosts } });
  await tunnel.event('ready', 60_000);
  t.match(tunnel.stderr, warning, 'the tunnel warns');
  t.equal(tunnel.stderr.split('\n').filter((line) => warning.test(line)).length, 1, 'once');
});
