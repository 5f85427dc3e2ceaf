// The SOCKS5 side of a tunnel over an in-memory channel pair: RFC 1928 greeting and request from a
// raw client, destinations carried in the mux's OPEN frame, the gateway's verdict as the reply code,
// and a named-target tunnel that ignores any destination a client puts in an OPEN frame.

import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import t from 'tap';
import { decodeDestination, encodeDestination, Mux, type MuxDestination } from '../../adapters/mux.js';
import { serveSocks } from '../../adapters/socks5-server.js';
import { framePair } from '../support/frame-pair.js';
import { sha256, tcpServer } from '../support/processes.js';
import type { TapTest } from '../support/tap.js';

const listenPort = async (t: TapTest, onSocket: (socket: Socket) => void) => (await tcpServer(t, onSocket)).port;

/** A SOCKS listener whose streams reach a gateway mux; `decide` plays the gateway's dial. */
async function socksTunnel(t: TapTest, decide: (destination: MuxDestination | undefined) => Promise<Socket>) {
  const [near, far] = framePair();
  const client = new Mux(near);
  const asked: Array<MuxDestination | undefined> = [];
  const gateway = new Mux(far, {
    dial: (destination) => {
      asked.push(destination);
      return decide(destination);
    },
  });
  t.teardown(() => Promise.all([client.close(), gateway.close()]));
  const port = await listenPort(t, (socket) => serveSocks(socket, (s, d, done) => client.open(s, d, done)));
  return { port, asked };
}

const echoPort = (t: TapTest) => listenPort(t, (socket) => socket.pipe(socket));

const dialLocal = (port: number) =>
  new Promise<Socket>((resolve, reject) => {
    const socket = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    socket.once('connect', () => resolve(socket));
    socket.once('error', reject);
  });

/** Send `bytes`, collect everything until the other side closes. */
function exchange(port: number, bytes: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = connect({ port, host: '127.0.0.1' });
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', reject);
    socket.on('close', () => resolve(Buffer.concat(chunks)));
    socket.write(bytes);
    setTimeout(() => socket.end(), 300);
  });
}

const greeting = Buffer.from([5, 1, 0]);
const connectDomain = (host: string, port: number) => {
  const name = Buffer.from(host);
  const request = Buffer.from([5, 1, 0, 3, name.length, ...name, 0, 0]);
  request.writeUInt16BE(port, request.length - 2);
  return request;
};

t.test('the destination field of an OPEN frame round-trips; an empty one is the named target', async (t) => {
  t.same(decodeDestination(encodeDestination({ host: 'a.db.internal', port: 5432 })), { host: 'a.db.internal', port: 5432 });
  t.same(decodeDestination(encodeDestination({ host: '2001:db8::1', port: 443 })), { host: '2001:db8::1', port: 443 });
  t.equal(decodeDestination(Buffer.alloc(0)), undefined);
  t.equal(decodeDestination(Buffer.from([9, 0, 80, 65])), null, 'an unknown tag is malformed');
});

t.test('CONNECT by domain name: the gateway sees the name and port, the reply precedes the bytes', async (t) => {
  const echo = await echoPort(t);
  const { port, asked } = await socksTunnel(t, () => dialLocal(echo));
  const payload = randomBytes(256 * 1024);
  // Greeting, request and data in one write: the data must wait for the reply and then be carried.
  const back = await exchange(port, Buffer.concat([greeting, connectDomain('echo.internal', 7), payload]));
  t.same([...back.subarray(0, 2)], [5, 0], 'no-auth chosen');
  t.same([...back.subarray(2, 4)], [5, 0], 'CONNECT succeeded');
  t.equal(sha256(back.subarray(12)), sha256(payload), 'the bytes sent with the request came back intact');
  t.same(asked, [{ host: 'echo.internal', port: 7 }]);
});

t.test('CONNECT to IPv4 and IPv6 literals carries them as text', async (t) => {
  const echo = await echoPort(t);
  const { port, asked } = await socksTunnel(t, () => dialLocal(echo));
  const v4 = Buffer.from([5, 1, 0, 1, 192, 0, 2, 10, 0x1f, 0x90]);
  const v6 = Buffer.from([5, 1, 0, 4, 0x20, 0x01, 0x0d, 0xb8, ...Array(11).fill(0), 1, 0x01, 0xbb]);
  t.same([...(await exchange(port, Buffer.concat([greeting, v4]))).subarray(2, 4)], [5, 0]);
  t.same([...(await exchange(port, Buffer.concat([greeting, v6]))).subarray(2, 4)], [5, 0]);
  t.same(asked, [
    { host: '192.0.2.10', port: 8080 },
    { host: '2001:db8::1', port: 443 },
  ]);
});

t.test("the gateway's refusal code is the SOCKS reply; nothing else is sent", async (t) => {
  const codes = [2, 4, 5];
  let next = 0;
  const { port } = await socksTunnel(t, () => Promise.reject(Object.assign(new Error('refused by rule'), { replyCode: codes[next++] })));
  for (const code of codes) {
    const back = await exchange(port, Buffer.concat([greeting, connectDomain('x.internal', 22)]));
    t.same([...back], [5, 0, 5, code, 0, 1, 0, 0, 0, 0, 0, 0], `reply ${code}, then close`);
  }
});

t.test('protocol refusals: no acceptable method, BIND/UDP, an unknown address type, not SOCKS5', async (t) => {
  const { port, asked } = await socksTunnel(t, () => Promise.reject(new Error('never dialled')));
  t.same([...(await exchange(port, Buffer.from([5, 1, 2])))], [5, 0xff], 'only username/password offered: 0xFF');
  const bind = Buffer.from([5, 2, 0, 1, 127, 0, 0, 1, 0, 22]);
  t.same([...(await exchange(port, Buffer.concat([greeting, bind])))].slice(2, 4), [5, 7], 'BIND: command not supported');
  const udp = Buffer.from([5, 3, 0, 1, 127, 0, 0, 1, 0, 22]);
  t.same([...(await exchange(port, Buffer.concat([greeting, udp])))].slice(2, 4), [5, 7], 'UDP ASSOCIATE: command not supported');
  const badType = Buffer.from([5, 1, 0, 9, 1, 2, 3, 4, 0, 22]);
  t.same([...(await exchange(port, Buffer.concat([greeting, badType])))].slice(2, 4), [5, 8], 'address type not supported');
  t.same([...(await exchange(port, Buffer.from([4, 1, 0, 80, 127, 0, 0, 1, 0])))], [], 'SOCKS4 is closed without a reply');
  t.same(asked, [], 'nothing reached the gateway');
});

t.test('a named-target tunnel refuses an OPEN frame that names a destination', async (t) => {
  const echo = await echoPort(t);
  const [near, far] = framePair();
  const client = new Mux(near);
  const gateway = new Mux(far, {
    // What gateway/signalling.ts does for a named target: no destination, or no connection.
    dial: (destination) =>
      destination ? Promise.reject(Object.assign(new Error('named target only'), { replyCode: 2 })) : dialLocal(echo),
  });
  t.teardown(() => Promise.all([client.close(), gateway.close()]));
  const port = await listenPort(t, (socket) => serveSocks(socket, (s, d, done) => client.open(s, d, done)));
  const back = await exchange(port, Buffer.concat([greeting, connectDomain('169.254.169.254', 80)]));
  t.same([...back.subarray(2, 4)], [5, 2], 'not allowed');
});
