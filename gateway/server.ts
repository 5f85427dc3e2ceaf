// `pam gateway --listen`: sealed signalling over HTTP(S) (GET /v1/key → the gateway's public key,
// POST /v1/tunnels → a sealed offer in, a sealed answer out), served by gateway/signalling.ts.

import type { IncomingMessage, ServerResponse } from 'node:http';
import { BodyTooLarge, readBodyBytes } from '../adapters/http-body.js';
import { sealedContentType } from '../adapters/sealed-signalling.js';
import { HttpError, jsonServer, listenOn } from '../adapters/http-listen.js';
import { isLoopback } from '../adapters/loopback.js';
import { ClearRefusal, createSignalling, type SignallingOptions } from './signalling.js';

export type { GatewayTarget } from './signalling.js';

export interface GatewayOptions extends SignallingOptions {
  readonly host: string;
  readonly port: number;
  /** Largest signalling request body accepted. */
  readonly maxBodyBytes?: number;
  /** PEM certificate and key: serve signalling over HTTPS. */
  readonly tls?: { readonly cert: string; readonly key: string };
}

export interface Gateway {
  readonly url: string;
  readonly port: number;
  peerCount(): number;
  /** End live tunnels whose access the grants in force no longer allow (after a reload). */
  recheckAccess(): void;
  close(): Promise<void>;
}

/** The body of GET /v1/key: the key the client seals to (and pins). */
export function keyDocument(publicKey: Buffer): { kem: 'X25519'; key: string } {
  return { kem: 'X25519', key: publicKey.toString('base64') };
}

export async function startGateway(options: GatewayOptions): Promise<Gateway> {
  const maxBodyBytes = options.maxBodyBytes ?? 64 * 1024;
  const signalling = createSignalling(options);
  let signallingRequests = 0;

  async function route(request: IncomingMessage, response: ServerResponse): Promise<unknown> {
    const path = (request.url ?? '').split('?')[0];
    if (path === '/healthz' && request.method === 'GET') return { ok: true, peers: signalling.peerCount(), signallingRequests };
    if (path === '/v1/key' && request.method === 'GET') return keyDocument(options.key.publicKey);
    if (path === '/v1/tunnels') {
      signallingRequests += 1;
      if (request.method !== 'POST') throw new HttpError(405, 'use POST');
      const body = await readBodyBytes(request, maxBodyBytes).catch((error: unknown) => {
        throw error instanceof BodyTooLarge ? new HttpError(413, error.message) : error;
      });
      const sealed = await signalling.handle(body, request.socket.remoteAddress ?? 'unknown').catch((error: unknown) => {
        throw error instanceof ClearRefusal ? new HttpError(error.status, error.message) : error;
      });
      if (!response.headersSent) {
        response.writeHead(200, { 'content-type': sealedContentType, 'content-length': sealed.length });
        response.end(sealed);
      }
      return undefined;
    }
    throw new HttpError(404, 'not found');
  }

  const server = jsonServer({ tls: options.tls, requestTimeoutMs: 15_000, log: options.log }, route);

  const { url, port } = await listenOn(server, options.host, options.port, options.tls !== undefined);

  return {
    url,
    port,
    peerCount: () => signalling.peerCount(),
    recheckAccess: () => signalling.recheckAccess(),
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      signalling.closeAll();
      await closed;
    },
  };
}

/** A warning for a gateway reachable from the network without TLS, or undefined. */
export function listenWarning(host: string, tls: boolean): string | undefined {
  if (isLoopback(host) || tls) return undefined;
  return `listening on ${host} without TLS: signalling is sealed to the gateway key, but a client without a pinned key trusts the first key it is shown; pass --tls-cert and --tls-key`;
}
