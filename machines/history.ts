// What `pam tunnel history` says about a journal: how a tunnel went and why it ended, including the
// case no journal can record itself: an owner killed (e.g. kill -9) before it could write an ending.

import type { JournalEntry } from './journal.js';

export interface HistoryRow {
  readonly id: string;
  readonly target: string;
  readonly mode: string;
  readonly pid: number;
  readonly startedAt: string;
  readonly endedAt: string | null;
  readonly durationSeconds: number | null;
  readonly exitCode: number | null;
  readonly status: 'running' | 'ended' | 'died';
  readonly reason: string;
}

/**
 * `ownerAlive`: is the process that wrote the journal still the same live process? `lastSeen`: the
 * journal's last sign of life (its heartbeat), later than its last entry while the tunnel idled.
 */
export function summarize(
  id: string,
  entries: readonly JournalEntry[],
  ownerAlive: (pid: number, startTime: string) => boolean,
  lastSeen?: string,
): HistoryRow {
  const first = entries[0]!;
  const last = entries.at(-1)!;
  const meta = first.meta;
  const flags = meta?.input.flags;
  const mode = flags?.run !== undefined ? 'run' : flags?.background ? 'background' : flags?.inShell ? 'shell' : 'foreground';
  const base = { id, target: flags?.target ?? '?', mode, pid: meta?.pid ?? 0, startedAt: first.at };
  const seconds = (from: string, to: string) => Math.max(0, Math.round((Date.parse(to) - Date.parse(from)) / 100) / 10);
  if (last.output) {
    return {
      ...base,
      endedAt: last.at,
      durationSeconds: seconds(first.at, last.at),
      exitCode: last.output.exitCode,
      status: 'ended',
      reason: last.output.reason,
    };
  }
  if (meta && ownerAlive(meta.pid, meta.startTime)) {
    return { ...base, endedAt: null, durationSeconds: null, exitCode: null, status: 'running', reason: `running (${last.state})` };
  }
  const diedBy = lastSeen !== undefined && Date.parse(lastSeen) > Date.parse(last.at) ? lastSeen : last.at;
  return {
    ...base,
    endedAt: diedBy,
    durationSeconds: seconds(first.at, diedBy),
    exitCode: null,
    status: 'died',
    reason: `owner died without stopping (pid ${meta?.pid ?? '?'}, last seen ${last.state})`,
  };
}
