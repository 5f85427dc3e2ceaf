// End to end on 127.0.0.1: `pam broker`, gateways that register with it (no listening socket), clients
// reaching a site through it, refusals (broker token, second gateway for a site), minted TURN
// credentials, and tunnels that outlive the broker while new ones wait for its return.

import { createHmac } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { brokerToken, listeningTcpPorts, startBrokerGateway, startBrokerProc } from '../support/broker.js';
import { echoServer, pam, randomPayload, roundTrip, scratchDir, sha256, tunnelEnv, until } from '../support/processes.js';

const token = 'broker-e2e-gateway-token';
/** Sends 256 KiB through the tunnel and prints the sha256 of what came back. */
const echoScript = `"${process.execPath}" -e 'const p=require("crypto").createHash("sha256");const b=Buffer.alloc(262144,9);let n=0;const s=require("net").connect(+process.env.PAM_TUNNEL_PORT,"127.0.0.1",()=>s.end(b));s.on("data",d=>{p.update(d);n+=d.length});s.on("end",()=>{process.stdout.write(p.digest("hex"));process.exitCode=n===262144?0:5})'`;
const expected = sha256(Buffer.alloc(262144, 9));

t.test('a gateway behind a broker opens no listening socket; a client reaches its site through the broker, key pinned', async (t) => {
  const dir = scratchDir(t);
  const echo = await echoServer(t);
  const broker = await startBrokerProc(t, dir);
  const gateway = await startBrokerGateway(t, dir, token, broker.url, 'lab', { echo: echo.port });
  t.equal(gateway.url, `${broker.url}/sites/lab`);
  t.same(listeningTcpPorts(gateway.proc.pid), [], 'the gateway listens on no TCP port');
  t.match(broker.proc.stderr, /site lab registered from 127\.0\.0\.1 \(targets: echo; gateway key SHA256:/);

  const env = tunnelEnv(dir, token, gateway.url);
  const pinned = pam(t, ['tunnel', 'start', 'echo', '-R', echoScript], { env: { ...env, PAM_GATEWAY_KEY: gateway.key } });
  t.equal(await pinned.exited, 0, pinned.stderr);
  t.equal(pinned.stdout, expected, '256 KiB echoed intact through a brokered tunnel');
  const wrongToken = pam(t, ['tunnel', 'start', 'echo', '-R', 'true'], { env: { ...env, PAM_GATEWAY_TOKEN: 'not-it' } });
  t.equal(await wrongToken.exited, 77, 'the gateway (not the broker) refuses a wrong gateway token');
  t.match(wrongToken.stderr, /refused the token/);
  const wrongKey = pam(t, ['tunnel', 'start', 'echo', '-R', 'true'], { env: { ...env, PAM_GATEWAY_KEY: `SHA256:${'B'.repeat(43)}` } });
  t.equal(await wrongKey.exited, 77, 'a broker serving another key is caught by the pin');
  const noSite = pam(t, ['tunnel', 'start', 'echo', '-R', 'true', '--gateway', `${broker.url}/sites/elsewhere`], { env });
  t.equal(await noSite.exited, 69);
  t.match(noSite.stderr, /no gateway is registered for site 'elsewhere'/);
  t.notMatch(broker.proc.stderr, new RegExp(token), 'the gateway token never shows in the broker');
});

t.test(
  'a wrong PAM_BROKER_TOKEN is refused and logged; a second gateway for a site with another key is refused with a clear error',
  async (t) => {
    const dir = scratchDir(t);
    const echo = await echoServer(t);
    const broker = await startBrokerProc(t, dir);
    const impostor = await startBrokerGateway(
      t,
      dir,
      token,
      broker.url,
      'lab',
      { echo: echo.port },
      { env: { PAM_BROKER_TOKEN: 'a-wrong-broker-token-long-enough' }, wait: false },
    );
    t.equal(await impostor.proc.exited, 77, 'wrong broker token → 77');
    t.match(impostor.proc.stderr, /the broker http:\/\/127\.0\.0\.1:\d+ refused PAM_BROKER_TOKEN/);
    t.match(broker.proc.stderr, /refused a gateway from 127\.0\.0\.1: wrong or missing PAM_BROKER_TOKEN/);

    const first = await startBrokerGateway(
      t,
      dir,
      token,
      broker.url,
      'lab',
      { echo: echo.port },
      { extra: ['--key-file', join(dir, 'one.key')] },
    );
    const second = await startBrokerGateway(
      t,
      dir,
      token,
      broker.url,
      'lab',
      { echo: echo.port },
      { extra: ['--key-file', join(dir, 'two.key')], wait: false },
    );
    t.equal(await second.proc.exited, 69, 'the second gateway exits');
    t.match(
      second.proc.stderr,
      /refused site 'lab': site 'lab' is served with gateway key SHA256:\S+, this gateway presents SHA256:\S+: every gateway of a site must have the same key \(copy the --key-file\), or choose another --site/,
    );
    const still = pam(t, ['tunnel', 'start', 'echo', '-R', echoScript], {
      env: { ...tunnelEnv(dir, token, first.url), PAM_GATEWAY_KEY: first.key },
    });
    t.equal(await still.exited, 0, 'the first gateway still serves the site (no takeover)');

    const both = pam(t, ['gateway', '--broker', broker.url, '--site', 'x', '--listen', '127.0.0.1:0', '--target', 'a=127.0.0.1:1'], {
      env: { ...tunnelEnv(dir, token), PAM_BROKER_TOKEN: brokerToken },
    });
    t.equal(await both.exited, 2, '--broker with --listen is a usage error');
    const noToken = pam(t, ['gateway', '--broker', broker.url, '--site', 'x', '--target', 'a=127.0.0.1:1'], {
      env: { ...tunnelEnv(dir, token), PAM_BROKER_TOKEN: '' },
    });
    t.equal(await noToken.exited, 2);
    t.match(noToken.stderr, /set PAM_BROKER_TOKEN/);
  },
);

t.test('with --turn-secret-file the broker mints TURN REST credentials per exchange', async (t) => {
  const dir = scratchDir(t);
  const secretFile = join(dir, 'turn-secret');
  writeFileSync(secretFile, 'lab-turn-secret\n', { mode: 0o600 });
  const echo = await echoServer(t);
  const broker = await startBrokerProc(t, dir, [
    '--ice-server',
    'stun:192.0.2.1:3478',
    '--ice-server',
    'turn:192.0.2.1:3478?transport=tcp',
    '--turn-secret-file',
    secretFile,
  ]);
  await startBrokerGateway(t, dir, token, broker.url, 'lab', { echo: echo.port });
  const fetchServers = async () =>
    (
      (await (await fetch(`${broker.url}/sites/lab/v1/key`)).json()) as {
        iceServers: Array<{ urls: string; username?: string; credential?: string }>;
      }
    ).iceServers;
  const [first, second] = [await fetchServers(), await fetchServers()];
  t.same(first![0], { urls: 'stun:192.0.2.1:3478' }, 'STUN is handed out as given');
  const turn = first![1]!;
  t.equal(turn.urls, 'turn:192.0.2.1:3478?transport=tcp');
  const [expiry, label] = turn.username!.split(':');
  t.ok(Number(expiry) > Date.now() / 1000 + 3600 && Number(expiry) < Date.now() / 1000 + 13 * 3600, 'expires in hours, not never');
  t.match(label, /^pam-client-[0-9a-f]{16}$/);
  t.equal(
    turn.credential,
    createHmac('sha1', 'lab-turn-secret').update(turn.username!).digest('base64'),
    'password = base64(HMAC-SHA1(secret, username))',
  );
  t.not(second![1]!.username, turn.username, 'a fresh credential per exchange');
});

t.test('tunnels carry bytes while the broker is down; once it is back the gateway re-registers and new tunnels work', async (t) => {
  const dir = scratchDir(t);
  const echo = await echoServer(t);
  const broker = await startBrokerProc(t, dir);
  const gateway = await startBrokerGateway(t, dir, token, broker.url, 'lab', { echo: echo.port });
  const env = { ...tunnelEnv(dir, token, gateway.url), PAM_GATEWAY_KEY: gateway.key };
  const tunnel = pam(t, ['tunnel', 'start', 'echo', '-fg', '--json'], { env });
  const port = Number((await tunnel.event('ready')).port);
  const payload = randomPayload(1024 * 1024);
  t.equal(sha256(await roundTrip(port, payload)), sha256(payload), 'bytes flow with the broker up');

  broker.proc.child.kill('SIGKILL');
  await broker.proc.exited;
  await gateway.proc.line(/lost the broker .*re-registering/);
  for (let round = 0; round < 3; round += 1) {
    const more = randomPayload(512 * 1024 + round);
    t.equal(sha256(await roundTrip(port, more)), sha256(more), `round ${round + 1}: bytes flow with the broker down`);
  }
  const meanwhile = pam(t, ['tunnel', 'start', 'echo', '-R', 'true', '--timeout', '3', '--reconnect-attempts', '0'], { env });
  t.equal(await meanwhile.exited, 69, 'a new tunnel cannot start while the broker is down');

  const back = await startBrokerProc(t, dir, ['--listen', `127.0.0.1:${broker.port}`]);
  await gateway.proc.event('reregistered', 30_000);
  await until(() => back.proc.stderr.includes('site lab registered'), 5_000, 'the broker to log the registration');
  const fresh = pam(t, ['tunnel', 'start', 'echo', '-R', echoScript], { env });
  t.equal(await fresh.exited, 0, fresh.stderr);
  t.equal(fresh.stdout, expected, 'a new tunnel works after the broker is back');
  const last = randomPayload(256 * 1024);
  t.equal(sha256(await roundTrip(port, last)), sha256(last), 'the first tunnel is still up');
  tunnel.child.kill('SIGTERM');
  t.equal(await tunnel.exited, 0);
});
