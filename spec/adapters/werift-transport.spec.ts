// The werift transport against an in-process gateway on loopback: signalling failures map to the
// failure kinds that name the fix, a link carries bytes, and the gateway's HTTP edge refuses bad input.

import { randomBytes, createHash } from 'node:crypto';
import t from 'tap';
import { createTcpListenerFactory } from '../../adapters/tcp-listener.js';
import { createWeriftTransport } from '../../adapters/werift-transport.js';
import { listenWarning, startGateway, type Gateway } from '../../gateway/server.js';
import { createPeer, describeCandidate, gatheringComplete, withoutDefaultStun } from '../../adapters/werift-peer.js';
import { createSocket } from 'node:dgram';
import { echoServer, freePort, roundTrip } from '../support/processes.js';
import type { TapTest } from '../support/tap.js';
import { sealedPost, testGatewayKey } from '../support/sealed.js';
import type { GatewayKeyPair } from '../../adapters/sealed-signalling.js';

const token = 'transport-spec-token';
const ice = { hosts: ['127.0.0.1'] };

async function gateway(
  t: TapTest,
  targets: Record<string, number>,
  extra: { maxPeers?: number; maxPeersPerClient?: number } = {},
): Promise<Gateway & { lines: string[]; key: GatewayKeyPair }> {
  const lines: string[] = [];
  const key = await testGatewayKey();
  const started = await startGateway({
    host: '127.0.0.1',
    port: 0,
    token,
    key,
    targets: Object.fromEntries(Object.entries(targets).map(([name, port]) => [name, { host: '127.0.0.1', port }])),
    log: (line) => lines.push(line),
    ice,
    ...extra,
  });
  t.teardown(() => started.close());
  return Object.assign(started, { lines, key });
}

const kindOf = (promise: Promise<unknown>) =>
  promise.then(
    () => 'resolved',
    (error: { kind?: string; message?: string }) => `${error.kind}: ${error.message}`,
  );

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
  const hostPair = /^host 127\.0\.0\.1:\d+\/udp → host 127\.0\.0\.1:\d+\/udp$/;
  t.match(link.path?.(), { kind: 'direct', pair: hostPair }, 'the client names its selected pair: direct, host to host');
  t.match(
    gw.lines.join('\n'),
    /tunnel to echo open \(path direct: host 127\.0\.0\.1:\d+\/udp → host 127\.0\.0\.1:\d+\/udp\)/,
    'and so does the gateway',
  );
  await link.close();
  for (let i = 0; i < 200 && gw.peerCount() > 0; i += 1) await new Promise((resolve) => setTimeout(resolve, 10));
  t.equal(gw.peerCount(), 0, 'closing the link frees the gateway peer');
});

t.test('signalling failures carry their kind', async (t) => {
  const echo = await echoServer(t);
  const gw = await gateway(t, { echo: echo.port, web: echo.port });
  const signal = new AbortController().signal;
  t.match(
    await kindOf(createWeriftTransport({ token: 'wrong', ice }).negotiate({ gateway: gw.url, target: 'echo', signal })),
    /^authRefused: .*PAM_GATEWAY_TOKEN/,
  );
  t.match(
    await kindOf(createWeriftTransport({ token, ice }).negotiate({ gateway: gw.url, target: 'nosuch', signal })),
    /^unknownTarget: target 'nosuch' .*serves: echo, web/,
  );
  const down = `http://127.0.0.1:${await freePort()}`;
  t.match(
    await kindOf(createWeriftTransport({ token, ice }).negotiate({ gateway: down, target: 'echo', signal })),
    /^gatewayUnreachable: .*ECONNREFUSED/,
  );
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
  const post = (payload: Record<string, unknown>) => sealedPost(gw.url, gw.key.publicKey, payload);
  const status = async (payload: Record<string, unknown>) => (await post(payload)).reply?.status;
  t.equal(await status({}), 401, 'no token');
  t.equal(await status({ token: 'x' }), 401, 'forged token');
  t.equal(
    await status({ token: 'x'.repeat(token.length), target: 'nosuch', offer: 'v=0\r\n' }),
    401,
    'unknown target is not revealed before authentication',
  );
  t.equal(await status({ token, target: 1, offer: [] }), 400, 'wrong types');
  t.equal(await status({ token, target: 'echo', offer: 'hello' }), 400, 'not an SDP');
  t.equal(await status({ token, target: 'echo', offer: 'v=0\r\n', answerSetup: 'active' }), 400, 'answerSetup other than passive');
  t.equal(await status({ token, target: 'echo', offer: 'v=0\r\n', nonce: 'short' }), 400, 'a nonce too short to be fresh');
  t.equal((await post({ token, target: 'echo', offer: 'x'.repeat(70 * 1024) })).http, 413, 'body over the limit');
  const listed = await post({ token, target: '127.0.0.1:22', offer: 'v=0\r\n' });
  t.equal(listed.reply?.status, 404, 'an address is not a target name (no dialling outside the allowlist)');
  t.same(listed.reply?.targets, ['echo']);
  const clear = (body: Buffer) =>
    fetch(`${gw.url}/v1/tunnels`, { method: 'POST', body }).then(async (response) => ({
      status: response.status,
      body: (await response.json()) as { error?: string },
    }));
  t.match(
    await clear(Buffer.from('{"target":"echo","offer":"v=0"}')),
    { status: 400, body: { error: /not a sealed request/ } },
    'plain JSON is not accepted',
  );
  const otherKey = await testGatewayKey();
  const misdirected = await sealedPost(gw.url, otherKey.publicKey, { token, target: 'echo' });
  t.match(misdirected, { http: 400 }, 'a request sealed to another key does not open');
  const health = await fetch(`${gw.url}/healthz`);
  t.equal(health.status, 200);
  t.equal((await fetch(`${gw.url}/v1/tunnels`)).status, 405, 'GET is not signalling');
  const shown = (await (await fetch(`${gw.url}/v1/key`)).json()) as { kem: string; key: string };
  t.same(shown, { kem: 'X25519', key: gw.key.publicKey.toString('base64') }, 'GET /v1/key shows the public key only');
  t.equal(gw.peerCount(), 0);
});

t.test('a replayed sealed offer is refused, and so is one outside the time window', async (t) => {
  const echo = await echoServer(t);
  const gw = await gateway(t, { echo: echo.port });
  const first = await sealedPost(gw.url, gw.key.publicKey, { token, target: 'nosuch', offer: 'v=0\r\n' });
  t.equal(first.reply?.status, 404, 'the original request is served');
  const replayed = await fetch(`${gw.url}/v1/tunnels`, { method: 'POST', body: first.envelope });
  t.equal(replayed.status, 200, 'a replay still opens, and is answered under its own seal');
  const refusal = first.open(Buffer.from(await replayed.arrayBuffer()));
  t.equal(refusal?.status, 400, 'the replayed offer is refused');
  t.match(refusal?.error, /nonce already seen/);
  const stale = await sealedPost(gw.url, gw.key.publicKey, {
    token,
    target: 'nosuch',
    offer: 'v=0\r\n',
    timestamp: Date.now() - 10 * 60_000,
  });
  t.equal(stale.reply?.status, 400, 'a timestamp ten minutes old is refused');
  t.match(stale.reply?.error, /outside the 60 s window/);
  t.ok(
    gw.lines.some((line) => /nonce already seen: a replayed request/.test(line)),
    'the replay is logged as one',
  );
  t.ok(
    gw.lines.some((line) => /timestamp outside/.test(line)),
    'the stale request is logged',
  );
});

t.test('a client holding its per-client limit of tunnels is refused with 429', async (t) => {
  const echo = await echoServer(t);
  const gw = await gateway(t, { echo: echo.port }, { maxPeersPerClient: 1 });
  const transport = createWeriftTransport({ token, ice });
  const first = await transport.negotiate({ gateway: gw.url, target: 'echo', signal: new AbortController().signal });
  t.teardown(() => first.close());
  t.match(
    await kindOf(transport.negotiate({ gateway: gw.url, target: 'echo', signal: new AbortController().signal })),
    /HTTP 429: this client already holds 1 tunnels/,
  );
});

t.test('listenWarning: only a non-loopback listener without TLS is warned about', async (t) => {
  t.equal(listenWarning('127.0.0.1', false), undefined);
  t.equal(listenWarning('::1', false), undefined);
  t.equal(listenWarning('10.0.0.5', true), undefined);
  t.match(listenWarning('0.0.0.0', false), /without TLS.*--tls-cert and --tls-key/);
});

t.test("a configured STUN server is queried; without one, werift's public default is not", async (t) => {
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

t.test("a werift candidate line names the path's ends; relay on either end is a relayed path", async (t) => {
  t.same(describeCandidate('candidate:1 1 UDP 2130706431 192.0.2.2 50000 typ host'), { type: 'host', text: 'host 192.0.2.2:50000/udp' });
  t.same(describeCandidate('a=candidate:9 1 tcp 16777215 203.0.113.1 49160 typ relay raddr 0.0.0.0 rport 0'), {
    type: 'relay',
    text: 'relay 203.0.113.1:49160/tcp',
  });
  t.same(
    describeCandidate('626da4e5 1 udp 2116026367 127.0.0.1 56380 typ host generation 0'),
    { type: 'host', text: 'host 127.0.0.1:56380/udp' },
    'as werift spells it',
  );
  t.equal(describeCandidate('not a candidate'), undefined);
});
