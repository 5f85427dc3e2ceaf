// Journals on disk: `<registry>/journal/<tunnel-id>.jsonl`, one line per event the tunnel actor
// received, appended with O_APPEND (a crash can tear only the last line; readers skip it), 0600.
// Old journals are pruned when a new one opens: keep the newest `keep`, none older than `maxAgeDays`.

import { appendFileSync, mkdirSync, readdirSync, readFileSync, statSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { InspectionEvent } from 'xstate';
import { journalEvent, parseJournal, stateName, type JournalEntry, type JournalMeta } from '../machines/journal.js';
import { TunnelError, type Outcome } from '../machines/errors.js';

export interface JournalOptions {
  readonly registryDir: string;
  readonly meta: JournalMeta;
  readonly keep?: number;
  readonly maxAgeDays?: number;
  readonly warn?: (message: string) => void;
}

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
      try {
        appendFileSync(path, `${JSON.stringify(entry)}\n`, { mode: 0o600 });
      } catch (error) {
        broken = true;
        options.warn?.(`journal ${path} could not be written, no longer journalling: ${(error as NodeJS.ErrnoException).code ?? String(error)}`);
      }
    },
  };
}

function prune(dir: string, keep: number, maxAgeDays: number, current: string): void {
  const cutoff = Date.now() - maxAgeDays * 86_400_000;
  const journals = readdirSync(dir)
    .filter((name) => name.endsWith('.jsonl'))
    .map((name) => join(dir, name))
    .filter((path) => path !== current)
    .map((path) => ({ path, mtime: statSync(path, { throwIfNoEntry: false })?.mtimeMs ?? 0 }))
    .sort((a, b) => b.mtime - a.mtime);
  journals.forEach(({ path, mtime }, index) => {
    // One slot is for the journal being opened.
    if (index >= keep - 1 || mtime < cutoff) {
      try {
        unlinkSync(path);
      } catch {
        // a concurrent pruner got there first
      }
    }
  });
}

/** Every journal in the registry, newest first, parsed (torn lines skipped). */
export function readJournals(registryDir: string): Array<{ id: string; entries: JournalEntry[] }> {
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
      try {
        text = readFileSync(path, 'utf8');
      } catch {
        // removed meanwhile
      }
      return { id: name.slice(0, 8), entries: parseJournal(text) };
    })
    .filter((journal) => journal.entries.length > 0)
    .sort((a, b) => b.entries[0]!.at.localeCompare(a.entries[0]!.at));
}

/** The one journal whose id starts with `prefix`: none → exit 1, several → exit 2 naming them. */
export function findJournal(registryDir: string, prefix: string): { id: string; entries: JournalEntry[] } {
  const matches = readJournals(registryDir).filter((journal) => journal.id.startsWith(prefix));
  if (matches.length === 0) throw new TunnelError('generic', `no journal matches '${prefix}': see \`pam tunnel history\``);
  if (matches.length > 1) throw new TunnelError('usage', `'${prefix}' matches ${matches.length} journals: ${matches.map((match) => match.id).join(', ')}`);
  return matches[0]!;
}
