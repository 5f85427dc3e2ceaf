// The HTTP(S) side the gateway and the broker share: a JSON server whose routes throw HttpError for
// what the client did wrong, and a certificate that does not load or an address that cannot be bound
// become errors naming the fix, not crashes.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createServer as createHttpsServer } from 'node:https';
import { TunnelError } from '../machines/errors.js';

/** A certificate and key that do not load (not PEM, not a pair) are the operator's to fix, not a crash. */
export function httpsServer(
  tls: { readonly cert: string; readonly key: string },
  handler: (request: IncomingMessage, response: ServerResponse) => void,
) {
  try {
    return createHttpsServer({ cert: tls.cert, key: tls.key }, handler);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new TunnelError('usage', `--tls-cert/--tls-key cannot be used (${reason}): give a PEM certificate and its matching private key`);
  }
}

/** Why the signalling address cannot be bound, as an error the operator can act on. */
export function listenError(error: NodeJS.ErrnoException, address: string): Error {
  if (error.code === 'EADDRINUSE')
    return new TunnelError(
      'portBusy',
      `--listen ${address} is already in use: stop what holds it, or pick another port (port 0 picks a free one)`,
    );
  if (error.code === 'EACCES')
    return new TunnelError('portBusy', `not allowed to listen on ${address}: ports below 1024 need privileges; pick another --listen port`);
  if (error.code === 'EADDRNOTAVAIL' || error.code === 'ENOTFOUND' || error.code === 'EAI_AGAIN') {
    return new TunnelError('usage', `--listen ${address}: that address is not one of this machine's (${error.code})`);
  }
  return error;
}

/** A refusal a route throws: its status and message go to the client as `{ error }`. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export function reply(response: ServerResponse, status: number, body: unknown): void {
  if (response.headersSent) return;
  const text = JSON.stringify(body);
  response.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    ...(status === 413 ? { connection: 'close' } : {}),
  });
  response.end(text);
}

export interface JsonServerOptions {
  readonly tls?: { readonly cert: string; readonly key: string } | undefined;
  /** How long one request may take in all (the broker waits on a gateway inside it). */
  readonly requestTimeoutMs: number;
  readonly log: (line: string) => void;
}

/**
 * An HTTP(S) server for `route`: what it resolves (unless undefined: it answered itself) is sent as
 * JSON 200, an HttpError as its status, anything else as 500 with the stack in the log only. Slow or
 * stalled clients cannot hold its sockets open.
 */
export function jsonServer(
  options: JsonServerOptions,
  route: (request: IncomingMessage, response: ServerResponse) => Promise<unknown>,
): Server {
  const handler = (request: IncomingMessage, response: ServerResponse) => {
    route(request, response)
      .then((body) => body !== undefined && reply(response, 200, body))
      .catch((error: unknown) => {
        if (error instanceof HttpError) reply(response, error.status, { error: error.message });
        else {
          options.log(`internal error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
          reply(response, 500, { error: 'internal error' });
        }
      });
  };
  const server = options.tls ? httpsServer(options.tls, handler) : createServer(handler);
  server.headersTimeout = 10_000;
  server.requestTimeout = options.requestTimeoutMs;
  server.keepAliveTimeout = 5_000;
  return server;
}

/** Listen on host:port (port 0: a free one); resolves with the URL clients use and the bound port. */
export async function listenOn(server: Server, host: string, port: number, tls: boolean): Promise<{ url: string; port: number }> {
  const hostPart = host.includes(':') ? `[${host}]` : host;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) => reject(listenError(error, `${hostPart}:${port}`)));
    server.listen({ host, port }, () => resolve());
  });
  const bound = (server.address() as AddressInfo).port;
  return { url: `${tls ? 'https' : 'http'}://${hostPart}:${bound}`, port: bound };
}
