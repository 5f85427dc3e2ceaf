// The registry on disk: `<tmp>/keeper-tunnel-sessions/<pid>.json`, one file per owning process, written
// only by that process (atomic temp + fsync + rename, 0600) in a directory that must be ours and
// private. Readers trust an entry only while its pid is alive with the recorded start time.

import { constants, type Stats } from 'node:fs';
import { lstat, mkdir, open, readdir, realpath, unlink } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { dirname, isAbsolute, join, resolve, sep } from 'node:path';
import { TunnelError } from '../machines/errors.js';
import type { Registry, RegistryEntry, TunnelRecord } from '../machines/ports.js';
import { processStartTime } from './process-identity.js';
import { commanderView, maxEntryBytes, parseEntry, parseForeign, type ForeignEntry } from './registry-entry.js';
import { writeAtomically } from './atomic-write.js';

export interface RegistryScan {
  /** Our live entries, as `entries()` returns them. */
  readonly entries: RegistryEntry[];
  /** Other programs' entries whose owner pid is alive (e.g. Keeper Commander's), never ours to act on. */
  readonly foreign: ForeignEntry[];
}

export interface FsRegistry extends Registry {
  /** Our live entries and the live foreign ones; removes only files that are provably ours and dead. */
  scan(): Promise<RegistryScan>;
  /** This process's entry file. */
  readonly entryPath: string;
  /** Record (or clear) this process's control socket in its entry. */
  setControl(path: string | undefined): Promise<void>;
}

export interface FsRegistryOptions {
  readonly env: NodeJS.ProcessEnv;
  readonly dir?: string;
  readonly pid?: number;
  readonly startTime?: string;
  readonly control?: string;
}

const posix = process.platform !== 'win32';
const uid = () => (posix ? process.geteuid!() : 0);
const ignoreMissing = (error: NodeJS.ErrnoException) => {
  if (error.code !== 'ENOENT') throw error;
};

/**
 * The first component of absolute `path` that is a symlink, walked the way the kernel resolves it
 * (`link/`, `link/.` and `link/../x` all go through `link`), or undefined when there is none.
 */
async function symlinkOnTheWay(path: string): Promise<string | undefined> {
  let current: string = sep;
  for (const part of path.split(sep)) {
    if (part === '' || part === '.') continue;
    // No symlink so far, so `..` means the lexical parent, exactly as the kernel will take it.
    current = part === '..' ? dirname(current) : join(current, part);
    const stats = await lstat(current).catch(() => undefined);
    if (!stats) return undefined; // the rest does not exist yet: mkdir creates real directories
    if (stats.isSymbolicLink()) return current;
  }
  return undefined;
}

/** Why absolute `path` cannot hold the registry, or undefined when it is a private directory of ours. */
async function problemWith(path: string): Promise<string | undefined> {
  const before = await symlinkOnTheWay(path);
  if (before) return before === resolve(path) ? 'is a symlink' : `goes through the symlink ${before}`;
  try {
    await mkdir(path, { recursive: true, mode: 0o700 });
  } catch (error) {
    return `cannot be created (${(error as NodeJS.ErrnoException).code})`;
  }
  // Checked again once it exists: a component swapped for a link meanwhile shows up in realpath.
  if ((await realpath(path)) !== resolve(path)) return `resolves to ${await realpath(path)} through a symlink`;
  const stats = await lstat(path);
  if (stats.isSymbolicLink()) return 'is a symlink';
  if (!stats.isDirectory()) return 'is not a directory';
  if (!posix) return undefined;
  if (stats.uid !== uid()) return `is owned by uid ${stats.uid}, not by you (uid ${uid()})`;
  if ((stats.mode & 0o022) !== 0) return `is group- or world-writable (mode ${(stats.mode & 0o777).toString(8)})`;
  return undefined;
}

async function resolveLocation(options: FsRegistryOptions): Promise<string> {
  const explicit = options.dir ?? options.env.PAM_TUNNEL_REGISTRY;
  const fix = 'remove it, or set PAM_TUNNEL_REGISTRY to a directory of yours with mode 0700';
  if (explicit) {
    // Relative would mean a different registry in every working directory: list and stop would miss tunnels.
    if (!isAbsolute(explicit))
      throw new TunnelError(
        'unsafeRegistry',
        `registry directory ${explicit} is a relative path: set PAM_TUNNEL_REGISTRY to an absolute path`,
      );
    const problem = await problemWith(explicit);
    if (problem) throw new TunnelError('unsafeRegistry', `registry directory ${explicit} ${problem}: ${fix}`);
    return explicit;
  }
  // The system temp directory itself may be a link (macOS: /var → /private/var): start from its real path.
  const base = await realpath(tmpdir()).catch(() => tmpdir());
  const shared = join(base, 'keeper-tunnel-sessions');
  const sharedProblem = await problemWith(shared);
  if (!sharedProblem) return shared;
  const own = join(base, `keeper-tunnel-sessions-${uid()}`);
  const ownProblem = await problemWith(own);
  if (!ownProblem) return own;
  throw new TunnelError('unsafeRegistry', `registry directory ${shared} ${sharedProblem}, and ${own} ${ownProblem}: ${fix}`);
}

export async function openFsRegistry(options: FsRegistryOptions): Promise<FsRegistry> {
  const location = await resolveLocation(options);
  const pid = options.pid ?? process.pid;
  const entryPath = join(location, `${pid}.json`);
  const tunnels = new Map<string, TunnelRecord>();
  let control = options.control;
  let startTime = options.startTime;
  let writes: Promise<void> = Promise.resolve();

  const ownEntry = async (): Promise<RegistryEntry> => ({
    schema: 1,
    pid,
    startTime: (startTime ??= (await processStartTime(pid)) ?? 'unknown'),
    hostname: hostname(),
    ...(control !== undefined ? { control } : {}),
    tunnels: [...tunnels.values()],
  });

  /** Serialised: concurrent put/remove never interleave, and the file always holds the latest state. */
  const persist = () => {
    writes = writes
      .catch(() => undefined)
      .then(async () => {
        if (tunnels.size === 0) {
          await unlink(entryPath).catch(ignoreMissing);
          return;
        }
        try {
          const entry = await ownEntry();
          await writeAtomically(location, entryPath, `${JSON.stringify({ ...entry, ...commanderView(entry) })}\n`, 0o600);
        } catch (error) {
          const code = (error as NodeJS.ErrnoException).code ?? String(error);
          throw new TunnelError(
            'registryWrite',
            `cannot write the registry entry in ${location} (${code}): check its permissions and free space`,
          );
        }
      });
    return writes;
  };

  const isLive = async (entry: RegistryEntry) => entry.startTime !== '' && (await processStartTime(entry.pid)) === entry.startTime;

  return {
    location,
    entryPath,
    put(record) {
      tunnels.set(record.id, record);
      return persist();
    },
    remove(id) {
      tunnels.delete(id);
      return persist();
    },
    async setControl(path) {
      control = path;
      if (tunnels.size > 0) await persist();
    },
    isLive,
    scan,
    async entries() {
      return (await scan()).entries;
    },
  };

  async function scan(): Promise<RegistryScan> {
    const names = await readdir(location);
    const found = await Promise.all(names.map((name) => judge(name)));
    return {
      entries: found.filter((item): item is RegistryEntry => item !== undefined && 'schema' in item).sort((a, b) => a.pid - b.pid),
      foreign: found.filter((item): item is ForeignEntry => item !== undefined && !('schema' in item)).sort((a, b) => a.pid - b.pid),
    };
  }

  /**
   * One file of the directory, which other programs share (Keeper Commander) and users may drop files
   * in: ours and live → listed; another program's with a live pid → foreign; removed only when the
   * name is ours, the content is our schema (or our temp file), and its pid is gone or reincarnated.
   * Anything unreadable is left alone: a live owner's entry may be mid-replace, a foreign file is not ours.
   */
  async function judge(name: string): Promise<RegistryEntry | ForeignEntry | undefined> {
    const path = join(location, name);
    const temp = /^\.(\d{1,10})\.[0-9a-f]{8}\.tmp$/.exec(name);
    if (temp) {
      if ((await ownFile(path)) && (await processStartTime(Number(temp[1]))) === undefined) await unlink(path).catch(() => undefined);
      return undefined;
    }
    const socket = /^(\d{1,10})\.sock$/.exec(name);
    if (socket) {
      // A `pam shell` control socket left by an owner that died (kill -9, a crash): nothing listens.
      const stats = await lstat(path).catch(() => undefined);
      const ours = stats?.isSocket() && (!posix || stats.uid === uid());
      if (ours && Number(socket[1]) !== pid && (await processStartTime(Number(socket[1]))) === undefined)
        await unlink(path).catch(() => undefined);
      return undefined;
    }
    const match = /^(\d{1,10})\.json$/.exec(name);
    if (!match) return undefined;
    const filePid = Number(match[1]);
    // Our own entry from memory when this instance writes it; another instance in this process
    // (a command inside `pam shell`) reads the file like anyone else.
    if (filePid === pid && tunnels.size > 0) return ownEntry();
    const stats = await ownFile(path);
    if (!stats || stats.size > maxEntryBytes) return undefined;
    const text = await readNoFollow(path);
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      return undefined;
    }
    const current = await processStartTime(filePid);
    if (typeof value !== 'object' || value === null || (value as { schema?: unknown }).schema !== 1) {
      return current === undefined ? undefined : parseForeign(value, filePid);
    }
    const entry = parseEntry(text, filePid);
    if (entry && current === entry.startTime) return entry;
    const recorded = (value as { startTime?: unknown }).startTime;
    const dead = current === undefined || (typeof recorded === 'string' && recorded !== '' && recorded !== current);
    // Ours by name and schema, and its owner is gone: stale. Another reader may beat us to it.
    if (dead) await unlink(path).catch(() => undefined);
    return undefined;
  }
}

/** The file's stats if it is a regular file of this user (anything else is not ours to judge). */
async function ownFile(path: string): Promise<Stats | undefined> {
  const stats = await lstat(path).catch(() => undefined);
  return stats?.isFile() && (!posix || stats.uid === uid()) ? stats : undefined;
}

async function readNoFollow(path: string): Promise<string> {
  try {
    const handle = await open(path, constants.O_RDONLY | (constants.O_NOFOLLOW ?? 0));
    try {
      return (await handle.readFile({ encoding: 'utf8' })).slice(0, maxEntryBytes + 1);
    } finally {
      await handle.close();
    }
  } catch {
    return '';
  }
}
