// The werift transport against an in-process gateway on loopback: signalling failures map to the
// failure kinds that name the fix, a link carries bytes, and the gateway's HTTP edge refuses bad input.

import { randomBytes, createHash } from 'node:crypto';
import t from 'tap';
import { createTcpListenerFactory } from '../../adapters/tcp-listener.js';
import { createWeriftTransport } from '../../adapters/werift-transport.js';
import { listenWarning, startGateway, type Gateway } from '../../gateway/server.js';
import { createPeer, gatheringComplete, withoutDefaultStun } from '../../adapters/werift-peer.js';
import { createSocket } from 'node:dgram';
import { echoServer, freePort, roundTrip } from '../support/processes.js';
import type { TapTest } from '../support/tap.js';

const token = 'transport-spec-token';
const ice = { hosts: ['127.0.0.1'] };

async function gateway(t: TapTest, targets: Record<string, number>, extra: { maxPeers?: number; maxPeersPerClient?: number } = {}): Promise<Gateway & { lines: string[] }> {
  const lines: string[] = [];
  const started = await startGateway({
    host: '127.0.0.1',
    port: 0,
    token,
    targets: Object.fromEntries(Object.entries(targets).map(([name, port]) => [name, { host: '127.0.0.1', port }])),
    log: (line) => lines.push(line),
    ice,
    ...extra,
  });
  t.teardown(() => started.close());
  return Object.assign(started, { lines });
}

const kindOf = (promise: Promise<unknown>) => promise.then(() => 'resolved', (error: { kind?: string; message?: string }) => `${error.kind}: ${error.message}`);

t.test('a link carries a local connection to the target and back', async (t) => {
  const echo = await echoServer(t);
  const gw = await gateway(t, { echo: echo.port });
  const transport = createWeriftTransport({ token, ice });
  const negotiation = await transport.negotiate({ gateway: gw.url, target: 'echo', signal: new AbortController().signal });
  const link = await transport.establish(negotiation, new AbortController().signal);
  t.teardown(() => link.close());
  const listener = await createTcpListenerFactory().bind('127.0.0.1', 0);
  t.teardown(() => listener.close());
  listener.accept((socket) => link.carry(socket));
  const payload = randomBytes(1024 * 1024);
  const echoed = await roundTrip(listener.port, payload);
  t.equal(createHash('sha256').update(echoed).digest('hex'), createHash('sha256').update(payload).digest('hex'), '1 MiB echoed intact');
  t.equal(gw.peerCount(), 1, 'gateway serves one peer');
  await link.close();
  for (let i = 0; i < 200 && gw.peerCount() > 0; i += 1) await new Promise((resolve) => setTimeout(resolve, 10));
  t.equal(gw.peerCount(), 0, 'closing the link frees the gateway peer');
});

t.test('signalling failures carry their kind', async (t) => {
  const echo = await echoServer(t);
  const gw = await gateway(t, { echo: echo.port, web: echo.port });
  const signal = new AbortController().signal;
  t.match(await kindOf(createWeriftTransport({ token: 'wrong', ice }).negotiate({ gateway: gw.url, target: 'echo', signal })), /^authRefused: .*PAM_GATEWAY_TOKEN/);
  t.match(await kindOf(createWeriftTransport({ token, ice }).negotiate({ gateway: gw.url, target: 'nosuch', signal })), /^unknownTarget: target 'nosuch' .*serves: echo, web/);
  const down = `http://127.0.0.1:${await freePort()}`;
  t.match(await kindOf(createWeriftTransport({ token, ice }).negotiate({ gateway: down, target: 'echo', signal })), /^gatewayUnreachable: .*ECONNREFUSED/);
  t.equal(gw.peerCount(), 0, 'refused requests leave no peer behind');
});

t.test('an aborted negotiation rejects and leaves nothing open', async (t) => {
  const echo = await echoServer(t);
  const gw = await gateway(t, { echo: echo.port });
  const controller = new AbortController();
  const pending = createWeriftTransport({ token, ice }).negotiate({ gateway: gw.url, target: 'echo', signal: controller.signal });
  controller.abort(new Error('connect timeout'));
  t.match(await kindOf(pending), /connect timeout|abort/i);
});

t.test('the gateway refuses bad signalling requests with the right status', async (t) => {
  const echo = await echoServer(t);
  const gw = await gateway(t, { echo: echo.port }, { maxPeers: 1 });
  const post = (body: string, auth = `Bearer ${token}`) =>
    fetch(`${gw.url}/v1/tunnels`, { method: 'POST', headers: { authorization: auth, 'content-type': 'application/json' }, body }).then(async (response) => ({
      status: response.status,
      body: (await response.json()) as { error?: string; targets?: string[] },
    }));
  t.equal((await post('{}', '')).status, 401, 'no token');
  t.equal((await post('{}', 'Bearer x')).status, 401, 'forged token');
  const unknown = await post(JSON.stringify({ target: 'nosuch', offer: 'v=0\r\n' }), `Bearer ${'x'.repeat(token.length)}`);
  t.equal(unknown.status, 401, 'unknown target is not revealed before authentication');
  t.equal((await post('not json')).status, 400, 'bad JSON');
  t.equal((await post(JSON.stringify({ target: 1, offer: [] }))).status, 400, 'wrong types');
  t.equal((await post(JSON.stringify({ target: 'echo', offer: 'hello' }))).status, 400, 'not an SDP');
  t.equal((await post(JSON.stringify({ target: 'echo', offer: 'v=0\r\n', answerSetup: 'active' }))).status, 400, 'answerSetup other than passive');
  t.equal((await post(JSON.stringify({ target: 'echo', offer: 'x'.repeat(70 * 1024) }))).status, 413, 'body over the limit');
  const listed = await post(JSON.stringify({ target: '127.0.0.1:22', offer: 'v=0\r\n' }));
  t.equal(listed.status, 404, 'an address is not a target name (no dialling outside the allowlist)');
  t.same(listed.body.targets, ['echo']);
  const health = await fetch(`${gw.url}/healthz`);
  t.equal(health.status, 200);
  t.equal((await fetch(`${gw.url}/v1/tunnels`)).status, 405, 'GET is not signalling');
  t.equal(gw.peerCount(), 0);
});

t.test('a client holding its per-client limit of tunnels is refused with 429', async (t) => {
  const echo = await echoServer(t);
  const gw = await gateway(t, { echo: echo.port }, { maxPeersPerClient: 1 });
  const transport = createWeriftTransport({ token, ice });
  const first = await transport.negotiate({ gateway: gw.url, target: 'echo', signal: new AbortController().signal });
  t.teardown(() => first.close());
  t.match(await kindOf(transport.negotiate({ gateway: gw.url, target: 'echo', signal: new AbortController().signal })), /HTTP 429: this client already holds 1 tunnels/);
});

t.test('listenWarning: only a non-loopback listener without TLS is warned about', async (t) => {
  t.equal(listenWarning('127.0.0.1', false), undefined);
  t.equal(listenWarning('::1', false), undefined);
  t.equal(listenWarning('10.0.0.5', true), undefined);
  t.match(listenWarning('0.0.0.0', false), /without TLS.*--tls-cert and --tls-key/);
});

t.test('a configured STUN server is queried; without one, werift\'s public default is not', async (t) => {
  const stun = createSocket('udp4');
  const requests: Buffer[] = [];
  stun.on('message', (message) => requests.push(message));
  await new Promise<void>((resolve) => stun.bind(0, '127.0.0.1', resolve));
  t.teardown(() => stun.close());
  const url = `stun:127.0.0.1:${stun.address().port}`;
  const gatherWith = async (servers: Array<{ urls: string }>) => {
    const peer = createPeer({ hosts: ['127.0.0.1'], servers });
    t.teardown(() => peer.close());
    peer.createDataChannel('probe');
    const offer = await peer.createOffer();
    withoutDefaultStun(peer, { servers });
    const stunServers = peer.iceTransports.map((transport) => (transport.connection as unknown as { stunServer?: unknown }).stunServer);
    await peer.setLocalDescription(offer);
    await gatheringComplete(peer);
    return stunServers;
  };
  t.same(await gatherWith([]), [undefined], 'no STUN server at all when none is configured');
  t.equal(requests.length, 0);
  await gatherWith([{ urls: url }]);
  t.ok(requests.length > 0, 'the configured STUN server got a request');
  t.equal(requests[0]!.readUInt32BE(4), 0x2112a442, 'a STUN binding request (magic cookie)');
});
