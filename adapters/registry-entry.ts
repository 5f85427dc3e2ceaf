// The registry file format, validated field by field: whatever is on disk may be forged or torn, and
// nothing read from it reaches a signal, a path or a table without passing through here.

import { isAbsolute } from 'node:path';
import type { RegistryEntry, TunnelRecord } from '../machines/ports.js';

export const maxEntryBytes = 64 * 1024;

const modes = new Set(['foreground', 'background', 'run', 'shell']);
const states = new Set(['connecting', 'ready', 'reconnecting', 'stopping']);

const isString = (value: unknown, max = 512): value is string => typeof value === 'string' && value.length <= max;
const isPort = (value: unknown): value is number => Number.isInteger(value) && (value as number) >= 0 && (value as number) <= 65535;
const isOptionalPath = (value: unknown) => value === undefined || (isString(value, 4096) && isAbsolute(value) && !value.includes('\0'));

function parseRecord(value: unknown): TunnelRecord | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const record = value as Record<string, unknown>;
  const valid =
    isString(record.id) &&
    /^[0-9a-f]{8}$/.test(record.id) &&
    isString(record.target, 64) &&
    isString(record.gateway, 2048) &&
    isString(record.host, 255) &&
    isPort(record.port) &&
    modes.has(record.mode as string) &&
    states.has(record.state as string) &&
    Number.isInteger(record.reconnects) &&
    (record.reconnects as number) >= 0 &&
    isString(record.startedAt, 64) &&
    !Number.isNaN(Date.parse(record.startedAt)) &&
    (record.path === undefined || record.path === 'direct' || record.path === 'relay') &&
    isOptionalPath(record.pidFile) &&
    isOptionalPath(record.logFile);
  return valid ? (record as unknown as TunnelRecord) : undefined;
}

/** The entry in `text` if it is well-formed and belongs to `pid` (the file's name); else undefined. */
export function parseEntry(text: string, pid: number): RegistryEntry | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null) return undefined;
  const entry = value as Record<string, unknown>;
  if (entry.schema !== 1 || entry.pid !== pid || !isString(entry.startTime, 64) || entry.startTime === '' || !isString(entry.hostname, 255))
    return undefined;
  if (!isOptionalPath(entry.control) || !Array.isArray(entry.tunnels) || entry.tunnels.length > 256) return undefined;
  const tunnels = entry.tunnels.map(parseRecord);
  if (tunnels.some((tunnel) => tunnel === undefined)) return undefined;
  return {
    schema: 1,
    pid,
    startTime: entry.startTime,
    hostname: entry.hostname,
    ...(entry.control !== undefined ? { control: entry.control as string } : {}),
    tunnels: tunnels as TunnelRecord[],
  };
}

/**
 * Another program's live entry in the shared directory (Keeper Commander writes `<pid>.json` there with
 * top-level `pid`, `host`, `port`, `mode` and no `schema`). Shown by `list`, never signalled or removed.
 */
export interface ForeignEntry {
  readonly pid: number;
  readonly host?: string;
  readonly port?: number;
  readonly mode?: string;
  /** What it is a tunnel to, as that program names it (Commander: record title or uid). */
  readonly label?: string;
}

/** Printable ASCII only: a foreign file must not put terminal escapes into our table. */
const printable = (value: unknown): string | undefined =>
  typeof value === 'string' && /^[\x20-\x7e]{1,255}$/.test(value) ? value : undefined;

/** `value` (parsed JSON, not our schema) as a foreign entry if it names `pid` (the file's name) as its owner. */
export function parseForeign(value: unknown, pid: number): ForeignEntry | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const entry = value as Record<string, unknown>;
  if (entry.pid !== pid) return undefined;
  const port = isPort(entry.port) && entry.port > 0 ? entry.port : undefined;
  const fields = {
    host: printable(entry.host),
    port,
    mode: printable(entry.mode),
    label: printable(entry.record_title) ?? printable(entry.record_uid),
  };
  return { pid, ...Object.fromEntries(Object.entries(fields).filter(([, field]) => field !== undefined)) };
}

/**
 * Top-level fields Keeper Commander reads from every `<pid>.json` (its list and duplicate-port check):
 * our first tunnel's. See docs/decisions/0005-registry-coexistence.md.
 */
export function commanderView(entry: RegistryEntry): { host?: string; port?: number; mode?: string } {
  const first = entry.tunnels[0];
  return first ? { host: first.host, port: first.port, mode: first.mode } : {};
}
