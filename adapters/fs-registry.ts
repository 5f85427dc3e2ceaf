// The registry on disk: `<tmp>/keeper-tunnel-sessions/<pid>.json`, one file per owning process, written
// only by that process (atomic temp + fsync + rename, 0600) in a directory that must be ours and
// private. Readers trust an entry only while its pid is alive with the recorded start time.

import { constants, type Stats } from 'node:fs';
import { lstat, mkdir, open, readdir, realpath, rename, unlink } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { dirname, isAbsolute, join, resolve, sep } from 'node:path';
import { randomBytes } from 'node:crypto';
import { TunnelError } from '../machines/errors.js';
import type { Registry, RegistryEntry, TunnelRecord } from '../machines/ports.js';
import { processStartTime } from './process-identity.js';
import { maxEntryBytes, parseEntry } from './registry-entry.js';

export interface FsRegistry extends Registry {
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
    if (!isAbsolute(explicit)) throw new TunnelError('unsafeRegistry', `registry directory ${explicit} is a relative path: set PAM_TUNNEL_REGISTRY to an absolute path`);
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
    writes = writes.catch(() => undefined).then(async () => {
      if (tunnels.size === 0) {
        await unlink(entryPath).catch(ignoreMissing);
        return;
      }
      try {
        await writeAtomically(location, entryPath, `${JSON.stringify(await ownEntry())}\n`, 0o600);
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code ?? String(error);
        throw new TunnelError('registryWrite', `cannot write the registry entry in ${location} (${code}): check its permissions and free space`);
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
    async entries() {
      const names = await readdir(location);
      const found = await Promise.all(
        names.map(async (name): Promise<RegistryEntry | undefined> => {
          const match = /^(\d{1,10})\.json$/.exec(name);
          const path = join(location, name);
          if (!match) {
            if (/^\..*\.tmp$/.test(name)) await removeOldTemp(path);
            return undefined;
          }
          const filePid = Number(match[1]);
          // Our own entry from memory when this instance writes it; another instance in this process
          // (a command inside `pam shell`) reads the file like anyone else.
          if (filePid === pid && tunnels.size > 0) return ownEntry();
          const stats = await lstat(path).catch(() => undefined);
          if (!stats || (posix && stats.uid !== uid())) return undefined; // gone, or not ours to judge
          if (filePid === pid) return stats.isFile() ? parseEntry(await readNoFollow(path), filePid) : undefined;
          const entry = stats.isFile() && stats.size <= maxEntryBytes ? parseEntry(await readNoFollow(path), filePid) : undefined;
          if (entry && (await isLive(entry))) return entry;
          // Ours and not a live owner's: a stale, torn or forged file. Another reader may beat us to it.
          await unlink(path).catch(() => undefined);
          return undefined;
        }),
      );
      return found.filter((entry): entry is RegistryEntry => entry !== undefined).sort((a, b) => a.pid - b.pid);
    },
  };
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

async function removeOldTemp(path: string): Promise<void> {
  const stats: Stats | undefined = await lstat(path).catch(() => undefined);
  if (stats && (!posix || stats.uid === uid()) && Date.now() - stats.mtimeMs > 60_000) await unlink(path).catch(() => undefined);
}

/** Temp file in the same directory, fsync, rename: readers see the old or the new file, never a torn one. */
export async function writeAtomically(dir: string, path: string, text: string, mode: number): Promise<void> {
  const temp = join(dir, `.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const handle = await open(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, mode);
  try {
    await handle.writeFile(text);
    await handle.sync();
  } catch (error) {
    await handle.close();
    await unlink(temp).catch(() => undefined);
    throw error;
  }
  await handle.close();
  try {
    await rename(temp, path);
  } catch (error) {
    await unlink(temp).catch(() => undefined);
    throw error;
  }
}
