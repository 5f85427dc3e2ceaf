// Binding an HTTP(S) listener for the gateway and the broker: a certificate that does not load and an
// address that cannot be bound become errors naming the fix, not crashes.

import type { IncomingMessage, ServerResponse } from 'node:http';
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
