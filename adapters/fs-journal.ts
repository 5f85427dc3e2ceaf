// Journals on disk: `<registry>/journal/<tunnel-id>.jsonl`, one line per event the tunnel actor
// received, appended with O_APPEND (a crash can tear only the last line; readers skip it), 0600.
// Old journals are pruned when a new one opens: keep the newest `keep`, none older than `maxAgeDays`.

import { appendFileSync, mkdirSync, readdirSync, readFileSync, statSync, unlinkSync, utimesSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { InspectionEvent } from 'xstate';
import { journalEvent, parseJournal, stateName, type JournalEntry, type JournalMeta } from '../machines/journal.js';
import { TunnelError, type Outcome } from '../machines/errors.js';
import { blankSelector } from '../machines/selector.js';

export interface JournalOptions {
  readonly registryDir: string;
  readonly meta: JournalMeta;
  readonly keep?: number;
  readonly maxAgeDays?: number;
  readonly warn?: (message: string) => void;
}

/** How often a running tunnel's journal is touched (its mtime is the owner's last sign of life). */
export const heartbeatMs = 2_000;

export function journalDir(registryDir: string): string {
  return join(registryDir, 'journal');
}

/** Retention from the environment: PAM_JOURNAL_KEEP (default 200), PAM_JOURNAL_MAX_AGE_DAYS (default 30). */
export function journalRetention(env: NodeJS.ProcessEnv): { keep: number; maxAgeDays: number } {
  const number = (name: 'PAM_JOURNAL_KEEP' | 'PAM_JOURNAL_MAX_AGE_DAYS', fallback: number) => {
    const text = env[name]?.trim();
    if (!text) return fallback;
    if (!/^\d{1,6}$/.test(text)) throw new TunnelError('usage', `${name} '${env[name]}' must be a whole number (default ${fallback})`);
    return Number(text);
  };
  return { keep: number('PAM_JOURNAL_KEEP', 200), maxAgeDays: number('PAM_JOURNAL_MAX_AGE_DAYS', 30) };
}

/** Start a tunnel's journal; `inspect` goes to createActor's `inspect` option. */
export function openJournal(options: JournalOptions): { readonly path: string; inspect(event: InspectionEvent): void } {
  const dir = journalDir(options.registryDir);
  const path = join(dir, `${options.meta.id}.jsonl`);
  let seq = 0;
  let broken = false;
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    prune(dir, options.keep ?? 200, options.maxAgeDays ?? 30, path);
  } catch (error) {
    broken = true;
    options.warn?.(`journal disabled: ${String(error)}`);
  }
  // A sign of life while nothing happens: the file's mtime, touched every few seconds until the
  // ending is written, so `history` can tell how long an owner killed with -9 really ran.
  let heartbeat: NodeJS.Timeout | undefined;
  const beat = () => {
    try {
      const now = new Date();
      utimesSync(path, now, now);
    } catch {
      // not written yet, or removed: the next event recreates it
    }
  };
  return {
    path,
    inspect(inspection) {
      if (broken || inspection.type !== '@xstate.snapshot' || inspection.actorRef.sessionId !== inspection.rootId) return;
      const snapshot = inspection.snapshot as { value?: unknown; status?: string; output?: unknown };
      if (snapshot.value === undefined) return;
      const entry: JournalEntry = {
        seq,
        at: new Date().toISOString(),
        event: journalEvent(inspection.event),
        state: stateName(snapshot.value as never),
        ...(snapshot.status === 'done' ? { output: snapshot.output as Outcome } : {}),
        ...(seq === 0 ? { meta: options.meta } : {}),
      };
      seq += 1;
      if (entry.output) {
        clearInterval(heartbeat);
        heartbeat = undefined;
      } else if (!heartbeat) {
        heartbeat = setInterval(beat, heartbeatMs);
        heartbeat.unref();
      }
      try {
        appendFileSync(path, `${JSON.stringify(entry)}\n`, { mode: 0o600 });
      } catch (error) {
        broken = true;
        clearInterval(heartbeat);
        options.warn?.(
          `journal ${path} could not be written, no longer journalling: ${(error as NodeJS.ErrnoException).code ?? String(error)}`,
        );
      }
    },
  };
}

/** The background owners' logs (`<registry>/logs/<id>.log`), pruned with the journals of the same ids. */
export function logDir(registryDir: string): string {
  return join(registryDir, 'logs');
}

function prune(dir: string, keep: number, maxAgeDays: number, current: string): void {
  const cutoff = Date.now() - maxAgeDays * 86_400_000;
  const currentId = basename(current, '.jsonl');
  const logs = logDir(dirname(dir));
  const remove = (path: string) => {
    try {
      unlinkSync(path);
    } catch {
      // a concurrent pruner got there first, or there is no such log
    }
  };
  // Every id with a journal or a log, dated by the newer of the two; the same rule keeps or drops both.
  const ids = new Map<string, number>();
  const note = (folder: string, suffix: string) => {
    let names: string[] = [];
    try {
      names = readdirSync(folder);
    } catch {
      return; // no logs yet
    }
    for (const name of names.filter((candidate) => candidate.endsWith(suffix))) {
      const id = name.slice(0, -suffix.length);
      if (id === currentId) continue;
      const mtime = statSync(join(folder, name), { throwIfNoEntry: false })?.mtimeMs ?? 0;
      ids.set(id, Math.max(ids.get(id) ?? 0, mtime));
    }
  };
  note(dir, '.jsonl');
  note(logs, '.log');
  [...ids.entries()]
    .sort((a, b) => b[1] - a[1])
    .forEach(([id, mtime], index) => {
      // One slot is for the journal being opened.
      if (index >= keep - 1 || mtime < cutoff) {
        remove(join(dir, `${id}.jsonl`));
        remove(join(logs, `${id}.log`));
      }
    });
}

/** Every journal in the registry, newest first, parsed (torn lines skipped). */
export function readJournals(registryDir: string): Array<{ id: string; entries: JournalEntry[]; lastSeen?: string }> {
  const dir = journalDir(registryDir);
  let names: string[];
  try {
    names = readdirSync(dir).filter((name) => /^[0-9a-f]{8}\.jsonl$/.test(name));
  } catch {
    return [];
  }
  return names
    .map((name) => {
      const path = join(dir, name);
      let text = '';
      let lastSeen: string | undefined;
      try {
        text = readFileSync(path, 'utf8');
        lastSeen = statSync(path).mtime.toISOString();
      } catch {
        // removed meanwhile
      }
      return { id: name.slice(0, 8), entries: parseJournal(text), ...(lastSeen ? { lastSeen } : {}) };
    })
    .filter((journal) => journal.entries.length > 0)
    .sort((a, b) => b.entries[0]!.at.localeCompare(a.entries[0]!.at));
}

/** The one journal whose id starts with `prefix`: none → exit 1, several → exit 2 naming them. */
export function findJournal(registryDir: string, prefix: string): { id: string; entries: JournalEntry[] } {
  const blank = blankSelector(prefix, 'journal id', 'name a tunnel id (or prefix) from `pam tunnel history`');
  if (blank) throw new TunnelError(blank.kind, blank.reason);
  const matches = readJournals(registryDir).filter((journal) => journal.id.startsWith(prefix));
  if (matches.length === 0) throw new TunnelError('generic', `no journal matches '${prefix}': see \`pam tunnel history\``);
  if (matches.length > 1)
    throw new TunnelError('usage', `'${prefix}' matches ${matches.length} journals: ${matches.map((match) => match.id).join(', ')}`);
  return matches[0]!;
}
