// The owner's control channel: a 0600 unix socket next to its registry entry, so `pam tunnel stop <id>`
// can stop one tunnel of a process that owns several (the interactive shell) without killing the rest.
// Protocol: one JSON line each way: {"op":"stop","id":"...","expiresAt":ms} → {"ok":true} | {"ok":false,"error":"..."}.
// A request read after `expiresAt` (the owner was frozen, the client gave up) is refused, never acted on.

import { chmodSync, rmSync } from 'node:fs';
import { createConnection, createServer, type Server } from 'node:net';
import { TunnelError } from '../machines/errors.js';
import type { ControlClient } from '../machines/ports.js';

const maxRequestBytes = 4096;

export function createControlClient(timeoutMs = 5_000): ControlClient {
  return {
    stopTunnel(socketPath, id, options = {}) {
      const validForMs = options.validForMs ?? timeoutMs;
      return new Promise((resolve, reject) => {
        const socket = createConnection(socketPath);
        let reply = '';
        const giveUp = () => {
          socket.destroy();
          reject(new TunnelError('generic', `the owner's control channel ${socketPath} did not answer`));
        };
        // With an abort signal the caller bounds the wait; otherwise our own timer does.
        const timer = options.signal ? undefined : setTimeout(giveUp, validForMs);
        options.signal?.addEventListener('abort', giveUp, { once: true });
        socket.setEncoding('utf8');
        socket.on('connect', () => socket.write(`${JSON.stringify({ op: 'stop', id, expiresAt: Date.now() + validForMs })}\n`));
        socket.on('data', (chunk: string) => {
          reply += chunk;
          if (!reply.includes('\n') && reply.length < maxRequestBytes) return;
          clearTimeout(timer);
          socket.end();
          try {
            const answer = JSON.parse(reply.split('\n')[0]!) as { ok?: unknown; error?: unknown };
            if (answer.ok === true) resolve();
            else reject(new TunnelError('generic', `the owner refused to stop ${id}: ${String(answer.error)}`));
          } catch {
            reject(new TunnelError('generic', `the owner's control channel sent an unreadable reply`));
          }
        });
        socket.on('error', (error) => {
          clearTimeout(timer);
          reject(new TunnelError('generic', `cannot reach the owner's control channel ${socketPath}: ${error.message}`));
        });
      });
    },
  };
}

/** Serve stop requests for the tunnels this process owns; `stop` resolves once the request is accepted. */
export async function openControlServer(socketPath: string, stop: (id: string) => boolean): Promise<{ close(): Promise<void> }> {
  rmSync(socketPath, { force: true });
  const server: Server = createServer((socket) => {
    let request = '';
    socket.setEncoding('utf8');
    socket.on('error', () => undefined);
    socket.on('data', (chunk: string) => {
      request += chunk;
      if (request.length > maxRequestBytes) return void socket.destroy();
      if (!request.includes('\n')) return;
      let answer: { ok: boolean; error?: string };
      try {
        const message = JSON.parse(request.split('\n')[0]!) as { op?: unknown; id?: unknown; expiresAt?: unknown };
        answer =
          message.op !== 'stop' || typeof message.id !== 'string'
            ? { ok: false, error: 'unknown request' }
            : typeof message.expiresAt === 'number' && Date.now() > message.expiresAt
              ? { ok: false, error: 'the request expired before it was read' }
              : stop(message.id)
                ? { ok: true }
                : { ok: false, error: `no tunnel ${message.id} here` };
      } catch {
        answer = { ok: false, error: 'unreadable request' };
      }
      socket.end(`${JSON.stringify(answer)}\n`);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => resolve());
  });
  chmodSync(socketPath, 0o600);
  server.unref();
  return {
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        rmSync(socketPath, { force: true });
      }),
  };
}
