// The local end of a tunnel: a TCP listener on the user's machine. Connections that arrive before the
// link is up wait (paused) until accept(); peers other than loopback are refused when bound to loopback.

import { createServer, isIP, type Server, type Socket } from 'node:net';
import { hostPort } from '../machines/address.js';
import { TunnelError } from '../machines/errors.js';
import type { ListenerFactory, LocalListener } from '../machines/ports.js';
import { isLoopback } from './loopback.js';

/** Connections that may wait for the link (before it is up, or while it reconnects); more are refused. */
const maxWaiting = 128;

class TcpListener implements LocalListener<Socket> {
  private handler: ((socket: Socket) => void) | undefined;
  private readonly queued: Socket[] = [];
  private readonly open = new Set<Socket>();

  constructor(
    private readonly server: Server,
    readonly host: string,
    readonly port: number,
    loopbackOnly: boolean,
  ) {
    server.on('connection', (socket) => {
      if (loopbackOnly && !isLoopback(socket.remoteAddress)) {
        socket.destroy();
        return;
      }
      this.open.add(socket);
      socket.once('close', () => this.open.delete(socket));
      socket.on('error', () => undefined);
      if (this.handler) this.handler(socket);
      else if (this.queued.length >= maxWaiting) socket.destroy();
      else {
        socket.pause();
        this.queued.push(socket);
        socket.once('close', () => {
          const index = this.queued.indexOf(socket);
          if (index >= 0) this.queued.splice(index, 1); // gave up waiting
        });
      }
    });
  }

  accept(onConnection: ((socket: Socket) => void) | undefined): void {
    this.handler = onConnection;
    if (onConnection) for (const socket of this.queued.splice(0)) onConnection(socket);
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const socket of this.open) socket.destroy();
    await closed;
  }
}

export function createTcpListenerFactory(): ListenerFactory<Socket> {
  return {
    bind(host, port) {
      if (isIP(host) === 0 && host !== 'localhost') {
        return Promise.reject(new TunnelError('usage', `--host '${host}' is not an IP address; use e.g. 127.0.0.1 or ::1`));
      }
      const server = createServer({ allowHalfOpen: true, pauseOnConnect: false });
      return new Promise<LocalListener<Socket>>((resolve, reject) => {
        server.once('error', (error: NodeJS.ErrnoException) => {
          if (error.code === 'EADDRINUSE') {
            reject(
              new TunnelError(
                'portBusy',
                `local port ${hostPort(host, port)} is already in use; pick another --port (or 0 for any free one)`,
              ),
            );
          } else if (error.code === 'EACCES') {
            reject(
              new TunnelError(
                'portBusy',
                `not allowed to bind ${hostPort(host, port)}; ports below 1024 need privileges — pick another --port`,
              ),
            );
          } else if (error.code === 'EADDRNOTAVAIL') {
            reject(new TunnelError('usage', `--host ${host} is not an address of this machine`));
          } else reject(error);
        });
        server.listen({ host, port, exclusive: true }, () => {
          const address = server.address();
          const bound = typeof address === 'object' && address ? address.port : port;
          resolve(new TcpListener(server, host, bound, isLoopback(host)));
        });
      });
    },
  };
}
