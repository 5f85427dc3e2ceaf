// How the gateway connects a stream: to a named target's configured address, or, for a SOCKS
// stream, to the addresses the policy checked (never the name again), with refusals as SOCKS codes.

import { connect, type Socket } from 'node:net';
import type { MuxDestination } from '../adapters/mux.js';
import { type SocksPolicy, type SocksRule, socksReply } from './socks-policy.js';

export interface DialTarget {
  readonly host: string;
  readonly port: number;
}

/** An open refused with a SOCKS5 reply code (the mux sends it back to a client that named a destination). */
export class DialRefusal extends Error {
  constructor(
    readonly replyCode: number,
    message: string,
    /** Logged already, with the destination: the mux need not log it again. */
    readonly logged = false,
  ) {
    super(message);
  }
}

export const refuseDestination = (reason: string) => Promise.reject(new DialRefusal(socksReply.notAllowed, reason));

/** How long one address may take to accept a connection. */
const socksConnectTimeoutMs = 10_000;

const connectErrorReply: Record<string, number> = {
  ECONNREFUSED: socksReply.connectionRefused,
  EHOSTUNREACH: socksReply.hostUnreachable,
  ENETUNREACH: socksReply.networkUnreachable,
  ETIMEDOUT: socksReply.ttlExpired,
};

/**
 * One SOCKS CONNECT: the policy resolves and checks, then the checked addresses are dialled in turn
 * (never the name again, so a second DNS answer cannot differ from the one checked). Refusals are logged.
 */
export async function dialSocks(
  policy: SocksPolicy,
  destination: MuxDestination,
  log: (line: string) => void,
  /** A principal's own rules (a per-key grant), deciding instead of the gateway's --socks-allow. */
  rules?: readonly SocksRule[],
): Promise<Socket> {
  const asked = `${destination.host.includes(':') ? `[${destination.host}]` : destination.host}:${destination.port}`;
  const decision = await policy.decide(destination, rules);
  if (!decision.allowed) {
    log(`CONNECT ${asked} refused (reply ${decision.code}): ${decision.reason}`);
    throw new DialRefusal(decision.code, decision.reason, true);
  }
  let last: DialRefusal | undefined;
  for (const { address } of decision.addresses) {
    try {
      return await dialTarget({ host: address, port: destination.port }, socksConnectTimeoutMs);
    } catch (error) {
      const code = (error as { code?: string }).code ?? '';
      last = new DialRefusal(connectErrorReply[code] ?? socksReply.generalFailure, (error as Error).message);
    }
  }
  log(`CONNECT ${asked} failed (reply ${last!.replyCode}): ${last!.message}`);
  throw new DialRefusal(last!.replyCode, last!.message, true);
}

export function dialTarget(target: DialTarget, timeoutMs?: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: target.host, port: target.port, allowHalfOpen: true });
    const timer =
      timeoutMs === undefined
        ? undefined
        : setTimeout(() => socket.destroy(Object.assign(new Error('connect timed out'), { code: 'ETIMEDOUT' })), timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(Object.assign(new Error(`target ${target.host}:${target.port}: ${error.code ?? error.message}`), { code: error.code }));
    });
  });
}
