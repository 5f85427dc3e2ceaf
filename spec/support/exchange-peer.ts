// Both ends of a two-way byte exchange, run as processes inside lab namespaces: each side sends its own
// random bytes, half-closes, reads the other's until FIN, and prints one JSON line with both digests.
//   serve HOST BYTES         listen on HOST (port 0), print {"event":"listening","port":N}, exchange once
//   connect HOST PORT BYTES  connect, exchange, exit 0
// (Imports nothing from the project, so it starts fast.)

import { createHash, randomBytes } from 'node:crypto';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';

const [mode, host, ...rest] = process.argv.slice(2);
const print = (value: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(value)}\n`);

function exchange(socket: Socket, bytes: number, done: () => void): void {
  const payload = randomBytes(bytes);
  const received = createHash('sha256');
  let receivedBytes = 0;
  socket.on('data', (chunk: Buffer) => {
    received.update(chunk);
    receivedBytes += chunk.length;
  });
  socket.once('end', () => {
    print({
      event: 'exchanged',
      sent: createHash('sha256').update(payload).digest('hex'),
      received: received.digest('hex'),
      receivedBytes,
    });
    done();
  });
  socket.once('error', (error) => {
    print({ event: 'error', message: error.message });
    process.exit(1);
  });
  socket.end(payload);
}

if (mode === 'serve' && host && rest.length === 1) {
  const server = createServer({ allowHalfOpen: true }, (socket) => exchange(socket, Number(rest[0]), () => socket.destroy()));
  server.listen(0, host, () => print({ event: 'listening', port: (server.address() as AddressInfo).port }));
} else if (mode === 'connect' && host && rest.length === 2) {
  const socket = connect({ host, port: Number(rest[0]), allowHalfOpen: true });
  socket.once('connect', () => exchange(socket, Number(rest[1]), () => socket.destroy()));
} else {
  process.stderr.write('usage: exchange-peer serve HOST BYTES | connect HOST PORT BYTES\n');
  process.exit(2);
}
