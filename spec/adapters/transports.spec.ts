// Both WebRTC implementations behind the same ports, in every pairing (client × gateway): a link
// carries bytes both ways and the gateway frees the peer when the link closes.

import { randomBytes } from 'node:crypto';
import t from 'tap';
import { createTcpListenerFactory } from '../../adapters/tcp-listener.js';
import { createWeriftTransport } from '../../adapters/werift-transport.js';
import { createNativeTransport } from '../../adapters/native-transport.js';
import { startGateway } from '../../gateway/server.js';
import { weriftAnswerer } from '../../gateway/answerer.js';
import { nativeAnswerer } from '../../gateway/native-answerer.js';
import { echoServer, roundTrip, sha256, until } from '../support/processes.js';

const token = 'transports-spec-token';
const ice = { hosts: ['127.0.0.1'] };
const clients = { werift: () => createWeriftTransport({ token, ice }), native: () => createNativeTransport({ token, ice }) };
const answerers = { werift: () => weriftAnswerer(ice), native: () => nativeAnswerer(ice) };

for (const [clientName, client] of Object.entries(clients)) {
  for (const [gatewayName, answerer] of Object.entries(answerers)) {
    t.test(`${clientName} client ↔ ${gatewayName} gateway: 4 MiB echoed intact`, async (t) => {
      const echo = await echoServer(t);
      const gateway = await startGateway({ host: '127.0.0.1', port: 0, token, targets: { echo: { host: '127.0.0.1', port: echo.port } }, log: () => undefined, ice, answerer: answerer() });
      t.teardown(() => gateway.close());
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

t.test('native ↔ native: 300 concurrent connections × 64 KiB, all intact (a queued send is back-pressure, not an error)', async (t) => {
  const echo = await echoServer(t);
  const gateway = await startGateway({ host: '127.0.0.1', port: 0, token, targets: { echo: { host: '127.0.0.1', port: echo.port } }, log: () => undefined, ice, answerer: nativeAnswerer(ice) });
  t.teardown(() => gateway.close());
  const transport = createNativeTransport({ token, ice });
  const link = await transport.establish(await transport.negotiate({ gateway: gateway.url, target: 'echo', signal: AbortSignal.timeout(20_000) }), AbortSignal.timeout(20_000));
  t.teardown(() => link.close());
  const listener = await createTcpListenerFactory().bind('127.0.0.1', 0);
  t.teardown(() => listener.close());
  listener.accept((socket) => link.carry(socket));
  const payloads = Array.from({ length: 300 }, () => randomBytes(64 * 1024));
  const echoed = await Promise.all(payloads.map((payload) => roundTrip(listener.port, payload)));
  t.equal(echoed.filter((bytes, index) => sha256(bytes) === sha256(payloads[index]!)).length, 300);
});
