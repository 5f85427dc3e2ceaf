// What the gateway's audit log records, and the port it writes through (adapters/audit-log.ts is the
// file behind it). Every field is metadata: never a token, a key, or a byte of what a tunnel carries.

import type { Principal, RefusalCode } from './principal.js';

/** Who asked: a holder of the shared token, or of a user key (its fingerprint and comment). */
export type AuditPrincipal = Principal;

/** How one connection through a tunnel ended, as the gateway saw it. */
export type ConnectionEnd = 'fin' | 'rst-client' | 'rst-target' | 'target-refused' | 'tunnel-lost' | 'tunnel-closed';

export type AuditEvent =
  | {
      readonly event: 'access.refused';
      readonly client: string;
      readonly why: string;
      /** The status the client was answered with (401 token, 404 target, 429 limit, 503 audit log, …). */
      readonly status: number;
      readonly who?: AuditPrincipal;
      readonly target?: string;
      /** The access check's refusal code (token-refused, unknown-key, target-not-granted, …), for access refusals. */
      readonly code?: RefusalCode;
    }
  | {
      readonly event: 'tunnel.opened';
      readonly tunnel: string;
      readonly who: AuditPrincipal;
      readonly client: string;
      readonly target: string;
      readonly path: 'direct' | 'relay' | 'unknown';
      /** The selected candidate pair, when the WebRTC library tells. */
      readonly pair?: string;
      readonly reason?: string;
      readonly ticket?: string;
    }
  | {
      readonly event: 'connection.opened';
      readonly tunnel: string;
      readonly who: AuditPrincipal;
      readonly target: string;
      /** 1, 2, 3, … within the tunnel. */
      readonly connection: number;
      /** A SOCKS tunnel's connection: the host:port the client asked for (before the gateway's policy decides). */
      readonly destination?: string;
    }
  | {
      readonly event: 'connection.closed';
      readonly tunnel: string;
      readonly who: AuditPrincipal;
      readonly target: string;
      readonly connection: number;
      /** Bytes the client sent to the target. */
      readonly bytesFromClient: number;
      /** Bytes the target sent to the client. */
      readonly bytesToClient: number;
      readonly durationMs: number;
      readonly end: ConnectionEnd;
    }
  | {
      readonly event: 'tunnel.closed';
      readonly tunnel: string;
      readonly who: AuditPrincipal;
      readonly target: string;
      readonly why: string;
      readonly connections: number;
      readonly bytesFromClient: number;
      readonly bytesToClient: number;
      readonly durationMs: number;
    };

export type AuditEventName = AuditEvent['event'];

export const auditEventNames: readonly AuditEventName[] = [
  'access.refused',
  'tunnel.opened',
  'connection.opened',
  'connection.closed',
  'tunnel.closed',
];

/** One line of the log: the event, when, and which gateway wrote it. */
export type AuditLine = AuditEvent & {
  readonly time: string;
  /** The gateway's key fingerprint. */
  readonly gateway: string;
  /** The broker site, for a gateway behind a broker. */
  readonly site?: string;
};

/** The audit log could not be written: the gateway refuses what it would have recorded. */
export class AuditUnavailable extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AuditUnavailable';
  }
}

export interface AuditSink {
  /** Resolves once the line is on disk (written and fsync'd); rejects with AuditUnavailable. */
  record(event: AuditEvent): Promise<void>;
  /** Resolves when a record would probably succeed now (file in place, space left); rejects with AuditUnavailable. */
  ready(): Promise<void>;
  close(): Promise<void>;
}

/** For gateways embedded without an audit log (tests of the data path). */
export const noAudit: AuditSink = {
  record: async () => undefined,
  ready: async () => undefined,
  close: async () => undefined,
};

/** `--since`: an ISO time, or how long ago (`90s`, `30m`, `1h`, `7d`); undefined when it is neither. */
export function parseSince(text: string, now: Date): Date | undefined {
  const relative = /^(\d+(?:\.\d+)?)(s|m|h|d)$/.exec(text.trim());
  if (relative) {
    const unit = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[relative[2] as 's' | 'm' | 'h' | 'd'];
    return new Date(now.getTime() - Number(relative[1]) * unit);
  }
  if (!/^\d{4}-\d{2}-\d{2}/.test(text.trim())) return undefined;
  const time = Date.parse(text);
  return Number.isNaN(time) ? undefined : new Date(time);
}

export interface AuditFilter {
  readonly since?: Date;
  /** A key fingerprint (with or without `SHA256:`), or `token` for the shared token. */
  readonly key?: string;
  readonly target?: string;
}

export function matchesAudit(line: AuditLine, filter: AuditFilter): boolean {
  if (filter.since && Date.parse(line.time) < filter.since.getTime()) return false;
  if (filter.target !== undefined && line.target !== filter.target) return false;
  if (filter.key !== undefined) {
    const who = line.who;
    if (!who) return false;
    if (filter.key === 'token') return who.kind === 'token';
    const wanted = filter.key.startsWith('SHA256:') ? filter.key : `SHA256:${filter.key}`;
    if (who.kind !== 'key' || who.fingerprint !== wanted) return false;
  }
  return true;
}

/** `token`, or `SHA256:… (comment)`. */
export function describePrincipal(who: AuditPrincipal | undefined): string {
  if (!who) return '-';
  if (who.kind === 'token') return 'token';
  return who.comment ? `${who.fingerprint} (${who.comment})` : who.fingerprint;
}

/** The event-specific part of a line, for the table's last column. */
export function describeAudit(line: AuditLine): string {
  switch (line.event) {
    case 'access.refused':
      return `${line.status}: ${line.why}`;
    case 'tunnel.opened':
      return [`path ${line.path}`, line.reason ? `reason "${line.reason}"` : '', line.ticket ? `ticket ${line.ticket}` : '']
        .filter(Boolean)
        .join(', ');
    case 'connection.opened':
      return `connection ${line.connection}${line.destination ? ` to ${line.destination}` : ''}`;
    case 'connection.closed':
      return `connection ${line.connection}: ${line.end}, ${line.bytesFromClient} B in, ${line.bytesToClient} B out, ${line.durationMs} ms`;
    case 'tunnel.closed':
      return `${line.why}; ${line.connections} connections, ${line.bytesFromClient} B in, ${line.bytesToClient} B out, ${line.durationMs} ms`;
  }
}
