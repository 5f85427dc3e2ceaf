// Both WebRTC implementations behind the same ports, in every pairing (client × gateway): a link
// carries bytes both ways and the gateway frees the peer when the link closes.

import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { createTcpListenerFactory } from '../../adapters/tcp-listener.js';
import { createWeriftTransport, weriftKind } from '../../adapters/werift-transport.js';
import { createNativeTransport, nativeKind } from '../../adapters/native-transport.js';
import { createPeerTransport, type PeerKind } from '../../adapters/peer-transport.js';
import { startGateway } from '../../gateway/server.js';
import { weriftAnswerer } from '../../gateway/answerer.js';
import { nativeAnswerer } from '../../gateway/native-answerer.js';
import { echoServer, roundTrip, sha256, until } from '../support/processes.js';
import { framePair } from '../support/frame-pair.js';
import { sealedHandler, sealedPost, testGatewayKey } from '../support/sealed.js';
import { openRequest, sealedContentType } from '../../adapters/sealed-signalling.js';
import { frameType, Mux, type FrameChannel } from '../../adapters/mux.js';
import { connect, type Socket } from 'node:net';
import { exitAfterLastTest } from '../support/native-exit.js';
import { createNativePeer, nativeChannelOpen, nativeFrames, nativeGathered } from '../../adapters/native-peer.js';

const dialEcho = (port: number) => () =>
  new Promise<Socket>((resolve, reject) => {
    const socket = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    socket.once('connect', () => resolve(socket));
    socket.once('error', reject);
  });
import type { TapTest } from '../support/tap.js';
import { nativeIceHostsWarning } from '../../cli/config.js';

exitAfterLastTest(t);

const token = 'transports-spec-token';
const ice = { hosts: ['127.0.0.1'] };
const clients = { werift: () => createWeriftTransport({ token, ice }), native: () => createNativeTransport({ token, ice }) };
const answerers = { werift: () => weriftAnswerer(ice), native: () => nativeAnswerer(ice) };

/** A gateway on 127.0.0.1 whose one target, echo, is a fresh echo server; closed at teardown. */
async function echoGateway(t: TapTest, answerer: ReturnType<(typeof answerers)[keyof typeof answerers]>, logged: string[] = []) {
  const echo = await echoServer(t);
  const gateway = await startGateway({
    host: '127.0.0.1',
    port: 0,
    token,
    key: await testGatewayKey(),
    targets: { echo: { host: '127.0.0.1', port: echo.port } },
    log: (line) => void logged.push(line),
    ice,
    answerer,
  });
  t.teardown(() => gateway.close());
  return gateway;
}

/** A link from `transport` to the gateway's echo target, carried from a local listener; closed at teardown. */
async function echoLink(t: TapTest, transport: ReturnType<typeof createNativeTransport>, url: string) {
  const negotiation = await transport.negotiate({ gateway: url, target: 'echo', signal: AbortSignal.timeout(20_000) });
  const link = await transport.establish(negotiation, AbortSignal.timeout(20_000));
  t.teardown(() => link.close());
  const listener = await createTcpListenerFactory().bind('127.0.0.1', 0);
  t.teardown(() => listener.close());
  listener.accept((socket) => link.carry(socket));
  return { link, port: listener.port };
}

for (const [clientName, client] of Object.entries(clients)) {
  for (const [gatewayName, answerer] of Object.entries(answerers)) {
    t.test(`${clientName} client ↔ ${gatewayName} gateway: 4 MiB echoed intact`, async (t) => {
      const gateway = await echoGateway(t, answerer());
      const transport = client();
      const negotiation = await transport.negotiate({ gateway: gateway.url, target: 'echo', signal: AbortSignal.timeout(20_000) });
      const link = await transport.establish(negotiation, AbortSignal.timeout(20_000));
      t.teardown(() => link.close());
      const listener = await createTcpListenerFactory().bind('127.0.0.1', 0);
      t.teardown(() => listener.close());
      listener.accept((socket) => link.carry(socket));
      const payload = randomBytes(4 * 1024 * 1024);
      t.equal(sha256(await roundTrip(listener.port, payload)), sha256(payload));
      t.equal(gateway.peerCount(), 1);
      await link.close();
      await until(() => gateway.peerCount() === 0, 5_000, 'the gateway to free the peer');
      t.equal(gateway.peerCount(), 0, 'closing the link frees the gateway peer');
    });
  }
}

for (const parallel of [2, 4]) {
  t.test(`native client with ${parallel} parallel connections ↔ native gateway: 8 MiB echoed intact, one tunnel`, async (t) => {
    const logged: string[] = [];
    const gateway = await echoGateway(t, nativeAnswerer(ice), logged);
    const transport = createNativeTransport({ token, ice, parallel });
    const { link, port } = await echoLink(t, transport, gateway.url);
    const payloads = [randomBytes(8 * 1024 * 1024), randomBytes(3 * 1024 * 1024 + 11)];
    const echoed = await Promise.all(payloads.map((payload) => roundTrip(port, payload)));
    t.same(echoed.map(sha256), payloads.map(sha256), 'both connections echoed byte for byte');
    t.equal(gateway.peerCount(), 1, 'the parallel connections are one tunnel at the gateway');
    await until(() => logged.some((line) => line.includes(`${parallel} connections`)), 5_000, 'the open line');
    t.match(logged.join('\n'), new RegExp(`tunnel to echo open \\(path direct: .*, ${parallel} connections\\)`));
    await link.close();
    await until(() => gateway.peerCount() === 0, 5_000, 'the gateway to free the peers');
    t.equal(gateway.peerCount(), 0, 'closing the link frees the gateway peer');
  });
}

/**
 * A stand-in gateway from before parallel connections and early data: it answers the first offer only
 * (and says `earlyData` only when told to). Its target's dial takes 100 ms, and `order` records, per
 * frame type, what its mux heard and sent, so a test sees whether data came before OPEN_OK.
 */
async function standInGateway(t: TapTest, options: { earlyData: boolean; negotiated?: boolean }) {
  const echo = await echoServer(t);
  const key = await testGatewayKey();
  const answerer = nativeAnswerer(ice);
  t.teardown(() => answerer.closeAll());
  const offers: Array<{ extraOffers?: string[]; negotiatedChannel?: number }> = [];
  const order: string[] = [];
  const recorded = (frames: FrameChannel): FrameChannel => ({
    send: (frame) => {
      order.push(`sent ${frame.readUInt8(0)}`);
      frames.send(frame);
    },
    get bufferedAmount() {
      return frames.bufferedAmount;
    },
    onFrame: (handler) =>
      frames.onFrame((frame) => {
        order.push(`heard ${frame.readUInt8(0)}`);
        handler(frame);
      }),
    onDrain: (handler) => frames.onDrain(handler),
    onClose: (handler) => frames.onClose(handler),
    close: () => frames.close(),
  });
  const slowDial = async () => {
    await new Promise((resolve) => setTimeout(resolve, 100));
    return dialEcho(echo.port)();
  };
  const server = createServer((request, response) => {
    if (request.url === '/v1/key') {
      response.setHeader('content-type', 'application/json');
      response.end(JSON.stringify({ kem: 'X25519', key: key.publicKey.toString('base64') }));
      return;
    }
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', async () => {
      const { request: plain, seal } = await openRequest(key, Buffer.concat(chunks));
      const fields = JSON.parse(plain.toString('utf8')) as {
        offer: string;
        extraOffers?: string[];
        answerSetup?: string;
        negotiatedChannel?: number;
      };
      offers.push(fields);
      // What a gateway that knows nothing of extraOffers does: answer the offer, ignore the rest.
      const negotiated =
        options.negotiated && fields.negotiatedChannel !== undefined ? { negotiatedChannel: fields.negotiatedChannel } : {};
      const answer = await answerer.answer(fields.offer, AbortSignal.timeout(10_000), {
        passive: fields.answerSetup === 'passive',
        ...negotiated,
      });
      void answer.channel.then((frames) => new Mux(recorded(frames), { dial: slowDial }));
      response.setHeader('content-type', sealedContentType);
      const reply = { status: 200, answer: answer.sdp, ...(options.earlyData ? { earlyData: true } : {}), ...negotiated };
      response.end(seal(Buffer.from(JSON.stringify(reply))));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => server.close());
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, offers, order };
}

t.test('a gateway that answers only the first offer (before parallel connections) still gets a working tunnel', async (t) => {
  const gateway = await standInGateway(t, { earlyData: false });
  const transport = createNativeTransport({ token, ice, parallel: 3 });
  const { port } = await echoLink(t, transport, gateway.url);
  t.equal(gateway.offers[0]?.extraOffers?.length, 2, 'the client offered two more connections');
  const payload = randomBytes(2 * 1024 * 1024);
  t.equal(sha256(await roundTrip(port, payload)), sha256(payload), 'the one answered connection carries the tunnel');
  // Such a gateway drops data for a connection it is still dialling: the client must wait for OPEN_OK.
  t.ok(gateway.order.indexOf(`heard ${frameType.data}`) > gateway.order.indexOf(`sent ${frameType.openOk}`), 'no data before OPEN_OK');
});

t.test("told `earlyData` in the answer, a client sends a connection's first bytes before the target answered", async (t) => {
  const gateway = await standInGateway(t, { earlyData: true });
  const { port } = await echoLink(t, createNativeTransport({ token, ice }), gateway.url);
  // More than the window: the client sends its credit (and at most one read more) early, then waits.
  const payload = randomBytes(2 * 1024 * 1024);
  t.equal(sha256(await roundTrip(port, payload)), sha256(payload), 'echoed intact');
  const firstData = gateway.order.indexOf(`heard ${frameType.data}`);
  t.ok(firstData >= 0 && firstData < gateway.order.indexOf(`sent ${frameType.openOk}`), 'data arrived while the target was being dialled');
});

t.test('told `negotiatedChannel`, the client uses the channel the gateway made (no DCEP); not told, it opens one with DCEP', async (t) => {
  // The stand-in's answerer then waits for no DCEP channel: a client that ignored the answer would never open.
  const gateway = await standInGateway(t, { earlyData: false, negotiated: true });
  const { port } = await echoLink(t, createNativeTransport({ token, ice }), gateway.url);
  t.equal(gateway.offers[0]?.negotiatedChannel, 1, 'the native client asked for stream 1');
  const payload = randomBytes(1024 * 1024);
  t.equal(sha256(await roundTrip(port, payload)), sha256(payload), 'echoed intact over the negotiated channel');
  // The other half (a gateway that does not say it) is the first-offer stand-in above: a DCEP channel.
});

t.test("the gateway's sealed answer says it holds early data, and makes the negotiated channel when asked", async (t) => {
  const key = await testGatewayKey();
  const echo = await echoServer(t);
  const gateway = await startGateway({
    host: '127.0.0.1',
    port: 0,
    token,
    key,
    targets: { echo: { host: '127.0.0.1', port: echo.port } },
    log: () => undefined,
    ice,
    answerer: nativeAnswerer(ice),
  });
  t.teardown(() => gateway.close());
  const kind = nativeKind(ice);
  const { peer, sdp } = await kind.offer(AbortSignal.timeout(10_000));
  t.teardown(() => kind.close(peer));
  const result = await sealedPost(gateway.url, key.publicKey, { token, target: 'echo', offer: sdp });
  t.equal(result.reply?.status, 200);
  t.equal(result.reply?.earlyData, true);
  t.equal(result.reply?.negotiatedChannel, undefined, 'not asked: no negotiated channel');
  const asked = await kind.offer(AbortSignal.timeout(10_000));
  t.teardown(() => kind.close(asked.peer));
  const negotiated = await sealedPost(gateway.url, key.publicKey, { token, target: 'echo', offer: asked.sdp, negotiatedChannel: 1 });
  t.equal(negotiated.reply?.negotiatedChannel, 1, 'asked: made');
  const bad = await sealedPost(gateway.url, key.publicKey, { token, target: 'echo', offer: asked.sdp, negotiatedChannel: 70000 });
  t.equal(bad.reply?.status, 400);
  t.match(bad.reply?.error, /negotiatedChannel/);
});

t.test('native ↔ native: 300 concurrent connections × 64 KiB, all intact (a queued send is back-pressure, not an error)', async (t) => {
  const gateway = await echoGateway(t, nativeAnswerer(ice));
  const transport = createNativeTransport({ token, ice });
  const link = await transport.establish(
    await transport.negotiate({ gateway: gateway.url, target: 'echo', signal: AbortSignal.timeout(20_000) }),
    AbortSignal.timeout(20_000),
  );
  t.teardown(() => link.close());
  const listener = await createTcpListenerFactory().bind('127.0.0.1', 0);
  t.teardown(() => listener.close());
  listener.accept((socket) => link.carry(socket));
  const payloads = Array.from({ length: 300 }, () => randomBytes(64 * 1024));
  const echoed = await Promise.all(payloads.map((payload) => roundTrip(listener.port, payload)));
  t.equal(echoed.filter((bytes, index) => sha256(bytes) === sha256(payloads[index]!)).length, 300);
});

t.test('the native gateway answers a=setup:passive only when the client asks (it then speaks DTLS first)', async (t) => {
  const kind = nativeKind(ice);
  const answerer = nativeAnswerer(ice);
  t.teardown(() => answerer.closeAll());
  const setupOf = async (passive: boolean) => {
    const { peer, sdp } = await kind.offer(AbortSignal.timeout(10_000));
    t.teardown(() => kind.close(peer));
    t.match(sdp, /^a=setup:actpass\r?$/m, 'the offer on the wire stays actpass');
    const answer = await answerer.answer(sdp, AbortSignal.timeout(10_000), { passive });
    return /^a=setup:(\w+)/m.exec(answer.sdp)?.[1];
  };
  t.equal(await setupOf(true), 'passive');
  t.equal(await setupOf(false), 'active');
  t.equal(kind.answerSetup, 'passive', 'the native client asks for it');
  t.equal(weriftKind(ice).answerSetup, undefined, "werift's does not (as DTLS client it fails against libdatachannel's OpenSSL server)");
});

t.test('a peer that fails at once is retried with growing pauses, not in a tight loop against the gateway', async (t) => {
  let offers = 0;
  const server = createServer(
    sealedHandler(
      await testGatewayKey(),
      () => ({ status: 200, answer: 'v=0\r\n' }),
      () => (offers += 1),
    ),
  );
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => server.close());
  const failing: PeerKind<object> = {
    offer: async () => ({ peer: {}, sdp: 'v=0\r\n' }),
    accept: async () => undefined,
    open: async () => {
      throw new Error('the peer connection failed before the data channel opened');
    },
    close: async () => undefined,
  };
  const transport = createPeerTransport(failing, { token });
  const signal = AbortSignal.timeout(1_500);
  const gateway = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  await t.rejects(transport.establish(await transport.negotiate({ gateway, target: 'echo', signal }), signal));
  // Pauses of 0, 250, 500, 1000 ms fit at most 5 offers in 1.5 s; without them it would be hundreds.
  t.ok(offers >= 2 && offers <= 5, `offers sent in 1.5 s: ${offers}`);
});

t.test('an answer over the size bound is refused as unreachable, not buffered', async (t) => {
  const key = await testGatewayKey();
  const server = createServer((request, response) => {
    if (request.url === '/v1/key') return sealedHandler(key, () => ({}))(request, response);
    request.resume();
    response.setHeader('content-type', 'application/json');
    // No content-length: the bound must hold while reading, not only against a declared length.
    response.write(`{"answer":"${'x'.repeat(300 * 1024)}`);
    response.end('"}');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => server.close());
  const kind: PeerKind<object> = {
    offer: async () => ({ peer: {}, sdp: 'v=0\r\n' }),
    accept: async () => undefined,
    open: async () => framePair()[0],
    close: async () => undefined,
  };
  const gateway = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  await t.rejects(createPeerTransport(kind, { token }).negotiate({ gateway, target: 'echo', signal: AbortSignal.timeout(5_000) }), {
    message: /gateway http:\/\/127\.0\.0\.1:\d+ is unreachable \(answer larger than 262144 bytes\)/,
  });
});

t.test('PAM_ICE_HOSTS restricts local host candidates: werift offers each address, native binds to the first only', async (t) => {
  const hostsOf = (sdp: string) => [...sdp.matchAll(/^a=candidate:\S+ \d+ udp \d+ (\S+) \d+ typ host/gim)].map((match) => match[1]);
  const hosts = ['127.0.0.1', '::1'];
  const werift = weriftKind({ hosts });
  const weriftOffer = await werift.offer(AbortSignal.timeout(10_000));
  t.teardown(() => werift.close(weriftOffer.peer));
  t.same(hostsOf(weriftOffer.sdp).sort(), [...hosts].sort(), 'werift: one host candidate per configured address, nothing else');
  const native = nativeKind({ hosts });
  const nativeOffer = await native.offer(AbortSignal.timeout(10_000));
  t.teardown(() => native.close(nativeOffer.peer));
  t.same(hostsOf(nativeOffer.sdp), ['127.0.0.1'], "native: libdatachannel's single bindAddress, the first address");
  t.match(nativeIceHostsWarning(hosts), /uses 127\.0\.0\.1 only \(--transport werift offers all of them\)/, 'the CLI says so in one line');
  t.equal(nativeIceHostsWarning(['127.0.0.1']), undefined, 'one address: nothing to say');
});

t.test('a peer closed before its channel is wrapped (a client gone mid-connect) is a closed channel, not a thrown error', async (t) => {
  // nativeFrames runs inside the library's channel-open callback, where a throw aborts the process.
  const peer = createNativePeer('closed-early', ice);
  const channel = peer.createDataChannel('pam-mux', { negotiated: true, id: 1 });
  peer.close();
  let frames: FrameChannel | undefined;
  t.doesNotThrow(() => {
    frames = nativeFrames(peer, channel);
  }, 'wrapping it does not throw');
  if (!frames) return;
  const reason = await Promise.race([
    new Promise<string>((resolve) => frames?.onClose(resolve)),
    new Promise<string>((resolve) => setTimeout(() => resolve('no close reported within 2 s'), 2_000)),
  ]);
  t.match(reason, /peer connection closed/, 'it reports itself closed to a handler added afterwards');
  t.equal(frames.bufferedAmount, 0);
  await t.rejects(nativeGathered(peer), /closed while gathering/, 'gathering on it fails with a reason, not a TypeError');
});

t.test('an exception while a frame is handled ends that channel with the error, instead of aborting the process', async (t) => {
  // A throw inside node-datachannel's message callback would end in std::terminate (SIGABRT).
  const near = createNativePeer('guard-near', ice);
  const far = createNativePeer('guard-far', ice);
  t.teardown(() => {
    near.close();
    far.close();
  });
  const nearChannel = near.createDataChannel('pam-mux', { negotiated: true, id: 1 });
  far.setRemoteDescription(await nativeGathered(near), 'offer');
  const farChannel = far.createDataChannel('pam-mux', { negotiated: true, id: 1 });
  near.setRemoteDescription(await nativeGathered(far), 'answer');
  await Promise.all([nativeChannelOpen(near, nearChannel), nativeChannelOpen(far, farChannel)]);
  const sender = nativeFrames(near, nearChannel);
  const receiver = nativeFrames(far, farChannel);
  receiver.onFrame(() => {
    throw new Error('a bug in a frame handler');
  });
  const reason = new Promise<string>((resolve) => receiver.onClose(resolve));
  sender.send(Buffer.from('one frame'));
  t.match(await reason, /internal error in the data path: a bug in a frame handler/);
  t.pass('the process is still here');
});
