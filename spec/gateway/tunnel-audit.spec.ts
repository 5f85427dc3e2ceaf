// A tunnel's audit trail from the mux's stream observer, over real TCP sockets and an in-memory channel
// pair: byte counts each way, how each connection ended, totals, order, and a connection refused
// (never dialled) when its connection.opened cannot be recorded.

import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import t from 'tap';
import { Mux } from '../../adapters/mux.js';
import { AuditUnavailable, type AuditEvent, type AuditSink } from '../../gateway/audit.js';
import { tunnelAudit } from '../../gateway/tunnel-audit.js';
import { framePair } from '../support/frame-pair.js';
import { freePort, halfCloseExchange, tcpServer, until } from '../support/processes.js';
import type { TapTest } from '../support/tap.js';

const listen = async (t: TapTest, onSocket: (socket: Socket) => void) => {
  const served = await tcpServer(t, onSocket);
  return { port: served.port, dialled: served.connections };
};

function memorySink(refuse: (event: AuditEvent) => boolean = () => false): AuditSink & { events: AuditEvent[] } {
  const events: AuditEvent[] = [];
  let tail = Promise.resolve();
  return {
    events,
    record(event) {
      // Asynchronous like the file, in call order like the file.
      const done = tail.then(async () => {
        await new Promise((resolve) => setImmediate(resolve));
        if (refuse(event)) throw new AuditUnavailable('the gateway cannot write its audit log (ENOSPC)');
        events.push(event);
      });
      tail = done.catch(() => undefined);
      return done;
    },
    ready: async () => undefined,
    close: async () => undefined,
  };
}

const dialTo = (port: number) => () =>
  new Promise<Socket>((resolve, reject) => {
    const socket = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    socket.once('connect', () => resolve(socket));
    socket.once('error', reject);
  });

async function auditedTunnel(t: TapTest, targetPort: () => number, sink: AuditSink) {
  const [near, far] = framePair();
  const client = new Mux(near);
  const trail = tunnelAudit(sink, { tunnel: 't1', who: { kind: 'token' }, client: '198.51.100.9', target: 'db' }, () => undefined);
  await trail.opened('direct: host 127.0.0.1:1/udp → host 127.0.0.1:2/udp').catch(() => undefined);
  const gateway = new Mux(far, { dial: () => dialTo(targetPort())(), streams: trail.streams });
  let lost: Promise<void> | undefined;
  gateway.onLost((reason) => (lost = trail.closed(reason)));
  t.teardown(() => Promise.all([client.close(), gateway.close()]));
  const local = await listen(t, (socket) => client.carry(socket));
  const closed = async () => {
    await until(() => lost !== undefined, 5_000, 'tunnel lost');
    await lost;
  };
  return { client, gateway, local, closed };
}

t.test('each connection is counted each way with how it ended; tunnel.closed carries the totals, in order', async (t) => {
  const sink = memorySink();
  const replyBytes = 50_000;
  const target = await listen(t, (socket) => {
    let got = 0;
    socket.on('data', (chunk: Buffer) => {
      got += chunk.length;
      if (got === 7) socket.resetAndDestroy(); // the "reset" connection sends exactly 7 bytes
    });
    socket.on('end', () => socket.end(randomBytes(replyBytes)));
  });
  let port = target.port;
  const { client, local, closed } = await auditedTunnel(t, () => port, sink);

  const reply = await halfCloseExchange(local.port, randomBytes(100_000));
  t.equal(reply.length, replyBytes);
  await until(() => sink.events.some((event) => event.event === 'connection.closed'), 5_000, 'first connection.closed');

  // The target resets a connection.
  await new Promise<void>((resolve) => {
    const socket = connect(local.port, '127.0.0.1', () => socket.write(Buffer.alloc(7)));
    socket.on('error', () => resolve());
    socket.on('close', () => resolve());
  });
  await until(() => sink.events.filter((event) => event.event === 'connection.closed').length === 2, 5_000, 'second');

  // The client resets one after sending 3 bytes.
  await new Promise<void>((resolve) => {
    const socket = connect(local.port, '127.0.0.1', () =>
      socket.write(Buffer.alloc(3), () => setTimeout(() => socket.resetAndDestroy(), 200)),
    );
    socket.on('error', () => undefined);
    socket.on('close', () => resolve());
  });
  await until(() => sink.events.filter((event) => event.event === 'connection.closed').length === 3, 5_000, 'third');

  // The target refuses one.
  port = await freePort();
  await new Promise<void>((resolve) => {
    const socket = connect(local.port, '127.0.0.1');
    socket.on('error', () => undefined);
    socket.on('close', () => resolve());
  });
  await until(() => sink.events.filter((event) => event.event === 'connection.closed').length === 4, 5_000, 'fourth');

  await client.close();
  await closed();
  t.same(
    sink.events.map((event) => event.event),
    ['tunnel.opened', ...Array.from({ length: 4 }, () => ['connection.opened', 'connection.closed']).flat(), 'tunnel.closed'],
  );
  t.match(sink.events[0], { event: 'tunnel.opened', tunnel: 't1', path: 'direct', pair: 'host 127.0.0.1:1/udp → host 127.0.0.1:2/udp' });
  const ended = sink.events.filter((event) => event.event === 'connection.closed');
  t.match(ended, [
    { connection: 1, bytesFromClient: 100_000, bytesToClient: replyBytes, end: 'fin' },
    { connection: 2, bytesFromClient: 7, bytesToClient: 0, end: 'rst-target' },
    { connection: 3, bytesFromClient: 3, bytesToClient: 0, end: 'rst-client' },
    { connection: 4, bytesFromClient: 0, bytesToClient: 0, end: 'target-refused' },
  ]);
  t.match(sink.events.at(-1), {
    event: 'tunnel.closed',
    why: 'the peer closed the tunnel',
    connections: 4,
    bytesFromClient: 100_010,
    bytesToClient: replyBytes,
  });
});

t.test('connections still open when the gateway closes the tunnel are recorded as ended with it', async (t) => {
  const sink = memorySink();
  let received = 0;
  const target = await listen(t, (socket) => socket.on('data', (chunk: Buffer) => (received += chunk.length)));
  const { gateway, local } = await auditedTunnel(t, () => target.port, sink);
  const socket = connect(local.port, '127.0.0.1', () => socket.write(Buffer.alloc(1000)));
  socket.on('error', () => undefined);
  await until(() => received === 1000, 5_000, 'the bytes at the target');
  // close() from this side raises no lost event: signalling records tunnel.closed itself after it.
  await gateway.close();
  await until(() => sink.events.some((event) => event.event === 'connection.closed'), 5_000, 'connection.closed');
  t.match(sink.events.at(-1), { event: 'connection.closed', connection: 1, end: 'tunnel-closed', bytesFromClient: 1000, bytesToClient: 0 });
});

for (const unwritable of ['tunnel.opened', 'connection.opened'] as const) {
  t.test(`a connection is refused, its target never dialled, when ${unwritable} cannot be recorded`, async (t) => {
    const sink = memorySink((event) => event.event === unwritable);
    const target = await listen(t, (socket) => socket.pipe(socket));
    const { local } = await auditedTunnel(t, () => target.port, sink);
    const outcome = await new Promise<string>((resolve) => {
      const socket = connect(local.port, '127.0.0.1', () => socket.write('hello'));
      socket.on('data', () => resolve('data'));
      socket.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
      socket.on('close', () => resolve('closed'));
    });
    t.not(outcome, 'data', `the local client got no bytes (${outcome})`);
    t.equal(target.dialled(), 0, 'the target was never dialled');
    t.same(
      sink.events.map((event) => event.event),
      unwritable === 'tunnel.opened' ? [] : ['tunnel.opened'],
      'nothing recorded for the refused connection',
    );
  });
}
