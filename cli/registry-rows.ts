// One row shape for everything that prints a registered tunnel as JSON: `list --json`, and the
// launcher of `start -bg --json` (so a script reads the same fields from either). Foreign entries
// (another program's, e.g. Keeper Commander's) get the same fields, null where they have none.

import type { RegistryEntry, TunnelRecord } from '../machines/ports.js';
import type { ForeignEntry } from '../adapters/registry-entry.js';
import { socksTarget } from '../machines/start-flags.js';

export interface TunnelRow {
  readonly id: string | null;
  readonly target: string | null;
  readonly host: string | null;
  readonly port: number | null;
  readonly pid: number;
  readonly mode: string | null;
  readonly state: string | null;
  readonly startedAt: string | null;
  readonly uptimeSeconds: number | null;
  readonly reconnects: number | null;
  /** The ICE path: `direct` (host or server-reflexive candidates) or `relay` (TURN); null when unknown. */
  readonly path: string | null;
  readonly gateway: string | null;
  /** A SOCKS5 proxy (`tunnel start --socks`; target `@socks`): the gateway decides each destination. */
  readonly socks: boolean;
  readonly pidFile: string | null;
  readonly logFile: string | null;
  /** true: not pam's entry; listed so it is not mistaken for free, never stopped or removed by pam. */
  readonly foreign: boolean;
}

export function tunnelRow(entry: Pick<RegistryEntry, 'pid'>, tunnel: TunnelRecord, now: number): TunnelRow {
  return {
    id: tunnel.id,
    target: tunnel.target,
    host: tunnel.host,
    port: tunnel.port,
    pid: entry.pid,
    mode: tunnel.mode,
    state: tunnel.state,
    startedAt: tunnel.startedAt,
    uptimeSeconds: Math.max(0, Math.round((now - Date.parse(tunnel.startedAt)) / 1000)),
    reconnects: tunnel.reconnects,
    path: tunnel.path ?? null,
    gateway: tunnel.gateway,
    socks: tunnel.target === socksTarget,
    pidFile: tunnel.pidFile ?? null,
    logFile: tunnel.logFile ?? null,
    foreign: false,
  };
}

export function foreignRow(entry: ForeignEntry): TunnelRow {
  return {
    id: null,
    target: entry.label ?? null,
    host: entry.host ?? null,
    port: entry.port ?? null,
    pid: entry.pid,
    mode: entry.mode ?? null,
    state: null,
    startedAt: null,
    uptimeSeconds: null,
    reconnects: null,
    path: null,
    gateway: null,
    socks: false,
    pidFile: null,
    logFile: null,
    foreign: true,
  };
}
