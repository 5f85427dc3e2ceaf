// The gateway's audit log as a file: append-only JSON lines, each written and fsync'd before record()
// resolves, rotated by size (FILE → FILE.1 → … → FILE.<keep>, the oldest dropped), and read back
// oldest first. A write that fails makes record()/ready() reject, so the gateway refuses what it
// cannot record; the file is reopened when it was removed or replaced, so a repaired log heals.

import { constants, type Stats } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, statfs, stat, unlink, type FileHandle } from 'node:fs/promises';
import { homedir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { TunnelError } from '../machines/errors.js';
import { auditEventNames, AuditUnavailable, type AuditEvent, type AuditLine, type AuditSink } from '../gateway/audit.js';

/** `$XDG_STATE_HOME/pam/audit.jsonl` (default `~/.local/state/pam/audit.jsonl`). */
export function defaultAuditFile(env: NodeJS.ProcessEnv): string {
  return join(env.XDG_STATE_HOME || join(env.HOME || homedir(), '.local', 'state'), 'pam', 'audit.jsonl');
}

export interface AuditLogOptions {
  readonly path: string;
  /** Rotate before a line would make the file larger than this. */
  readonly maxBytes: number;
  /** Rotated files kept beside the live one (FILE.1 … FILE.<keep>). */
  readonly keep: number;
  /** The gateway's key fingerprint, on every line. */
  readonly gateway: string;
  readonly site?: string | undefined;
  /** Operator log (stderr): when the audit log fails and when it heals. */
  readonly log?: (line: string) => void;
  /** ready() fails below this much free space on the log's file system. */
  readonly minFreeBytes?: number;
  readonly now?: () => Date;
}

export interface AuditLog extends AuditSink {
  readonly path: string;
}

const errorCode = (error: unknown) => (error as NodeJS.ErrnoException).code ?? (error instanceof Error ? error.message : String(error));

/**
 * Open (creating 0600, in a 0700 directory) the audit log; a log that cannot be written at start is a
 * usage error, so a gateway never starts without one.
 */
export async function openAuditLog(options: AuditLogOptions): Promise<AuditLog> {
  const { path, maxBytes, keep } = options;
  const minFreeBytes = options.minFreeBytes ?? 64 * 1024;
  const now = options.now ?? (() => new Date());
  const log = options.log ?? (() => undefined);
  let handle: FileHandle | undefined;
  let identity: { dev: number; ino: number } | undefined;
  let size = 0;
  let failing: string | undefined;
  let tail: Promise<unknown> = Promise.resolve();

  const serial = <T>(work: () => Promise<T>): Promise<T> => {
    const next = tail.then(work, work);
    tail = next.catch(() => undefined);
    return next;
  };

  async function closeHandle(): Promise<void> {
    const closing = handle;
    handle = undefined;
    identity = undefined;
    await closing?.close().catch(() => undefined);
  }

  async function syncDir(): Promise<void> {
    const dir = await open(dirname(path), constants.O_RDONLY);
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  }

  /** The handle, (re)opened when the path no longer names the file it writes to. */
  async function ensureOpen(): Promise<FileHandle> {
    if (handle && identity) {
      let current: Stats | undefined;
      try {
        current = await stat(path);
      } catch {
        current = undefined;
      }
      if (current && current.dev === identity.dev && current.ino === identity.ino) return handle;
      log(`the audit log ${path} was removed or replaced: reopening it`);
      await closeHandle();
    }
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    const opened = await open(path, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
    try {
      const info = await opened.stat();
      if (!info.isFile()) throw Object.assign(new Error('not a regular file'), { code: 'EINVAL' });
      if ((info.mode & 0o077) !== 0) {
        throw Object.assign(new Error(`readable or writable by others (mode ${(info.mode & 0o777).toString(8)}): chmod 600 ${path}`), {
          code: 'EPERM',
        });
      }
      if (info.size === 0) await syncDir();
      handle = opened;
      identity = { dev: info.dev, ino: info.ino };
      size = info.size;
      return opened;
    } catch (error) {
      await opened.close().catch(() => undefined);
      throw error;
    }
  }

  /** FILE → FILE.1 → … → FILE.<keep>; what was FILE.<keep> (and anything beyond) is dropped. */
  async function rotate(): Promise<void> {
    await closeHandle();
    for (let index = keep; index >= 1; index -= 1) {
      const from = index === 1 ? path : `${path}.${index - 1}`;
      await rename(from, `${path}.${index}`).catch((error: unknown) => {
        if (errorCode(error) !== 'ENOENT') throw error;
      });
    }
    for (let index = keep + 1; ; index += 1) {
      try {
        await unlink(`${path}.${index}`);
      } catch {
        break;
      }
    }
    await syncDir();
  }

  function fail(error: unknown): never {
    const code = errorCode(error);
    if (failing === undefined) log(`cannot write the audit log ${path} (${code}): refusing new tunnels until it can be written`);
    failing = code;
    throw new AuditUnavailable(`the gateway cannot write its audit log (${code}); it refuses new tunnels until that is fixed`);
  }

  function healed(): void {
    if (failing === undefined) return;
    failing = undefined;
    log(`the audit log ${path} can be written again: accepting new tunnels`);
  }

  async function append(line: Buffer): Promise<void> {
    let file = await ensureOpen();
    if (size > 0 && size + line.length > maxBytes) {
      await rotate();
      file = await ensureOpen();
    }
    const before = size;
    try {
      for (let written = 0; written < line.length; ) {
        const { bytesWritten } = await file.write(line, written, line.length - written);
        written += bytesWritten;
      }
      await file.sync();
      size += line.length;
    } catch (error) {
      // Take back a partial line, so the file stays whole lines; then start afresh next time.
      await file.truncate(before).catch(() => undefined);
      await closeHandle();
      throw error;
    }
  }

  const sink: AuditLog = {
    path,
    record(event: AuditEvent) {
      const { event: name, ...fields } = event;
      // time and event first, so a line reads like a log line.
      const line = {
        time: now().toISOString(),
        event: name,
        gateway: options.gateway,
        ...(options.site ? { site: options.site } : {}),
        ...fields,
      } as AuditLine;
      const bytes = Buffer.from(`${JSON.stringify(line)}\n`);
      return serial(async () => {
        try {
          await append(bytes);
        } catch (error) {
          fail(error);
        }
        healed();
      });
    },
    ready() {
      return serial(async () => {
        try {
          await ensureOpen();
          const space = await statfs(dirname(path)).catch(() => undefined);
          if (space && space.bavail * space.bsize < minFreeBytes) throw Object.assign(new Error('disk full'), { code: 'ENOSPC' });
        } catch (error) {
          await closeHandle();
          fail(error);
        }
        healed();
      });
    },
    close: () => serial(closeHandle),
  };

  await sink.ready().catch(() => {
    throw new TunnelError(
      'usage',
      `cannot write the audit log ${path} (${failing ?? 'unknown'}): pass --audit-log with a writable path (file 0600, directory not writable by others)`,
    );
  });
  return sink;
}

export interface AuditEntry {
  readonly file: string;
  /** 1-based line number within the file. */
  readonly line: number;
  readonly entry: AuditLine;
}

export interface AuditProblem {
  readonly file: string;
  readonly line: number;
  readonly reason: string;
}

/** FILE and its rotated files that exist, oldest first (FILE.<n> … FILE.1, FILE). */
export async function auditFiles(path: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(dirname(path));
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return [];
    throw error;
  }
  const base = basename(path);
  const rotated = names
    .map((name) => (name.startsWith(`${base}.`) ? /^\d+$/.exec(name.slice(base.length + 1)) : null))
    .filter((match): match is RegExpExecArray => match !== null)
    .map((match) => Number(match[0]))
    .sort((a, b) => b - a)
    .map((index) => `${path}.${index}`);
  return [...rotated, ...(names.includes(base) ? [path] : [])];
}

function problemOf(value: unknown): string | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'not a JSON object';
  const { time, event } = value as Record<string, unknown>;
  if (typeof time !== 'string' || Number.isNaN(Date.parse(time))) return 'no valid "time"';
  if (typeof event !== 'string' || !(auditEventNames as readonly string[]).includes(event)) return 'no known "event"';
  return undefined;
}

/** Every line of FILE and its rotated files, oldest first; lines that are not audit lines are reported, not fatal. */
export async function readAuditLog(path: string): Promise<{ entries: AuditEntry[]; problems: AuditProblem[]; files: string[] }> {
  const files = await auditFiles(path);
  const entries: AuditEntry[] = [];
  const problems: AuditProblem[] = [];
  for (const file of files) {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (error) {
      // Rotated away between listing and reading: its lines are in the next file now.
      if (errorCode(error) === 'ENOENT') continue;
      throw new TunnelError('usage', `cannot read the audit log ${file} (${errorCode(error)}): check --audit-log and its permissions`);
    }
    const lines = text.split('\n');
    if (lines.at(-1) === '') lines.pop();
    lines.forEach((raw, index) => {
      let value: unknown;
      try {
        value = JSON.parse(raw);
      } catch {
        problems.push({ file, line: index + 1, reason: 'not JSON' });
        return;
      }
      const problem = problemOf(value);
      if (problem) problems.push({ file, line: index + 1, reason: problem });
      else entries.push({ file, line: index + 1, entry: value as AuditLine });
    });
  }
  return { entries, problems, files };
}
