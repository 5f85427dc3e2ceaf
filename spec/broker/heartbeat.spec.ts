// The broker link's heartbeat, used by both ends (broker and gateway): a peer that answers pings keeps
// the socket; one that stops answering is terminated and reported once. Real sockets on 127.0.0.1.

import type { AddressInfo } from 'node:net';
import t from 'tap';
import { WebSocket, WebSocketServer } from 'ws';
import { heartbeat } from '../../broker/protocol.js';
import type { TapTest } from '../support/tap.js';

const intervalMs = 50;

/** A client socket to a server on 127.0.0.1 whose side answers pings only if `autoPong`. */
async function pair(t: TapTest, autoPong: boolean): Promise<WebSocket> {
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0, autoPong });
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  const ws = new WebSocket(`ws://127.0.0.1:${(server.address() as AddressInfo).port}`);
  t.teardown(() => ws.terminate());
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  return ws;
}

const closed = (ws: WebSocket) => new Promise<void>((resolve) => ws.once('close', () => resolve()));

t.test('a peer that stops answering pings is terminated and reported once', async (t) => {
  const ws = await pair(t, false);
  let silent = 0;
  heartbeat(ws, intervalMs, () => (silent += 1));
  await closed(ws);
  t.equal(silent, 1, 'onSilent called once');
  t.equal(ws.readyState, WebSocket.CLOSED);
});

t.test('a peer that answers pings keeps the socket', async (t) => {
  const ws = await pair(t, true);
  let silent = 0;
  heartbeat(ws, intervalMs, () => (silent += 1));
  await new Promise((resolve) => setTimeout(resolve, intervalMs * 8));
  t.equal(silent, 0, 'never reported silent');
  t.equal(ws.readyState, WebSocket.OPEN, 'still open after eight intervals');
  ws.close();
  await closed(ws);
});
