// One tunnel's audit trail: tunnel.opened, then connection.opened (awaited before its target is
// dialled) and connection.closed for each connection the client opens, then tunnel.closed with the
// totals. The mux tells of each stream through its StreamObserver; this turns that into lines.

import type { StreamEnd, StreamObserver } from '../adapters/mux.js';
import type { AuditPrincipal, AuditSink, ConnectionEnd } from './audit.js';

export interface TunnelAuditInput {
  readonly tunnel: string;
  readonly who: AuditPrincipal;
  readonly client: string;
  readonly target: string;
  readonly reason?: string | undefined;
  readonly ticket?: string | undefined;
}

export interface TunnelAudit {
  /** Record tunnel.opened; `selected` is the answerer's `direct: …` / `relay: …` description. */
  opened(selected: string | undefined): Promise<void>;
  /** For the tunnel's mux: connection.opened before each dial, connection.closed at each end. */
  readonly streams: StreamObserver;
  /** Record tunnel.closed (once, after every connection.closed), if tunnel.opened was recorded. */
  closed(why: string): Promise<void>;
}

const ends: Record<StreamEnd, ConnectionEnd> = {
  fin: 'fin',
  'reset-by-peer': 'rst-client',
  'reset-here': 'rst-target',
  'dial-failed': 'target-refused',
  lost: 'tunnel-lost',
  closed: 'tunnel-closed',
};

export function tunnelAudit(audit: AuditSink, input: TunnelAuditInput, log: (line: string) => void): TunnelAudit {
  const { tunnel, who, target } = input;
  const connections = new Map<number, { readonly number: number; readonly started: number; readonly recorded: Promise<void> }>();
  const pending = new Set<Promise<unknown>>();
  const totals = { connections: 0, bytesFromClient: 0, bytesToClient: 0 };
  let numbered = 0;
  let started: number | undefined;
  let opening: Promise<void> | undefined;
  let closing: Promise<void> | undefined;

  const track = (promise: Promise<unknown>) => {
    pending.add(promise);
    void promise.finally(() => pending.delete(promise)).catch(() => undefined);
  };
  const unrecorded = (what: string) => (error: unknown) =>
    log(`tunnel ${tunnel} to ${target}: ${what} not recorded: ${error instanceof Error ? error.message : String(error)}`);

  return {
    opened(selected) {
      const match = /^(direct|relay): (.+)$/.exec(selected ?? '');
      started = Date.now();
      opening = audit.record({
        event: 'tunnel.opened',
        tunnel,
        who,
        client: input.client,
        target,
        path: match ? (match[1] as 'direct' | 'relay') : 'unknown',
        ...(match ? { pair: match[2]! } : {}),
        ...(input.reason !== undefined ? { reason: input.reason } : {}),
        ...(input.ticket !== undefined ? { ticket: input.ticket } : {}),
      });
      return opening;
    },
    streams: {
      opening(id, destination) {
        numbered += 1;
        const number = numbered;
        // After tunnel.opened: the log's queue keeps them in order, and a tunnel never recorded carries nothing.
        const recorded = (opening ?? Promise.reject(new Error('tunnel not recorded'))).then(() =>
          audit.record({
            event: 'connection.opened',
            tunnel,
            who,
            target,
            connection: number,
            ...(destination ? { destination: `${destination.host.slice(0, 255)}:${destination.port}` } : {}),
          }),
        );
        connections.set(id, { number, started: Date.now(), recorded });
        track(recorded);
        return recorded.catch((error: unknown) => {
          connections.delete(id);
          throw error;
        });
      },
      ended(id, outcome) {
        const connection = connections.get(id);
        if (!connection) return;
        connections.delete(id);
        totals.connections += 1;
        totals.bytesFromClient += outcome.received;
        totals.bytesToClient += outcome.sent;
        const durationMs = Date.now() - connection.started;
        const record = connection.recorded.then(
          () =>
            audit
              .record({
                event: 'connection.closed',
                tunnel,
                who,
                target,
                connection: connection.number,
                bytesFromClient: outcome.received,
                bytesToClient: outcome.sent,
                durationMs,
                end: ends[outcome.end],
              })
              .catch(unrecorded(`connection.closed of connection ${connection.number}`)),
          () => undefined,
        );
        track(record);
      },
    },
    closed(why) {
      if (closing) return closing;
      if (!opening || started === undefined) return (closing = Promise.resolve());
      const durationMs = Date.now() - started;
      const snapshot = { ...totals };
      const after = [...pending];
      closing = opening.then(
        async () => {
          await Promise.allSettled(after);
          await audit
            .record({ event: 'tunnel.closed', tunnel, who, target, why, ...snapshot, durationMs })
            .catch(unrecorded('tunnel.closed'));
        },
        () => undefined,
      );
      return closing;
    },
  };
}
