// The owner process of a --background tunnel: spawned detached (new session) with stdio in a log file
// next to the registry, watched through the registry until ready, and never left running on failure.

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, openSync, closeSync, readFileSync, watch, type FSWatcher } from 'node:fs';
import { join } from 'node:path';
import { failureKinds, TunnelError, type FailureKind, type Outcome } from '../machines/errors.js';
import { logDir } from './fs-journal.js';
import type { BackgroundOwners, Registry } from '../machines/ports.js';

/** The environment variable that tells a `pam tunnel start -bg` process it is the owner, not the launcher. */
export const ownerIdVariable = 'PAM_TUNNEL_OWNER_ID';

export function createBackgroundOwners(options: {
  registry: Registry;
  /** Command line that re-runs this `pam tunnel start` (argv without node). */
  argv: readonly string[];
  env: NodeJS.ProcessEnv;
  pollMs?: number;
}): BackgroundOwners {
  const children = new Map<number, ChildProcess>();
  const pollMs = options.pollMs ?? 50;

  return {
    async spawn(id) {
      const logs = logDir(options.registry.location);
      const logFile = join(logs, `${id}.log`);
      let log: number;
      try {
        mkdirSync(logs, { recursive: true, mode: 0o700 });
        log = openSync(logFile, 'a', 0o600);
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code ?? String(error);
        throw new TunnelError('registryWrite', `cannot create the background log ${logFile} (${code}): check free space and permissions`);
      }
      try {
        const child = spawn(process.execPath, [...options.argv], {
          detached: true,
          stdio: ['ignore', log, log],
          env: { ...options.env, [ownerIdVariable]: id },
        });
        await new Promise<void>((resolve, reject) => {
          child.once('spawn', resolve);
          child.once('error', reject);
        });
        children.set(child.pid!, child);
        return { pid: child.pid!, logFile };
      } finally {
        closeSync(log);
      }
    },

    watch(id, owner, events) {
      const child = children.get(owner.pid);
      let finished = false;
      let watcher: FSWatcher | undefined;
      const finish = () => {
        finished = true;
        clearInterval(timer);
        watcher?.close();
      };
      const onExit = (code: number | null, signal: NodeJS.Signals | null) => {
        if (finished) return;
        finish();
        events.exited(ownerOutcome(owner.logFile, code, signal));
      };
      child?.once('exit', onExit);
      // One look at a time; a change seen during a look means one more look after it.
      let looking = false;
      let again = false;
      const look = () => {
        if (finished) return;
        if (looking) {
          again = true;
          return;
        }
        looking = true;
        void options.registry
          .entries()
          .then(
            (entries) => {
              if (finished) return;
              const record = entries
                .find((entry) => entry.pid === owner.pid)
                ?.tunnels.find((tunnel) => tunnel.id === id && tunnel.state === 'ready');
              if (!record) return;
              finish();
              child?.off('exit', onExit);
              // The owner lives on: let this process exit without waiting for it.
              child?.unref();
              events.ready(record);
            },
            () => undefined,
          )
          .finally(() => {
            looking = false;
            if (again) {
              again = false;
              look();
            }
          });
      };
      // The owner's ready entry is renamed into the registry directory: watching it, the launcher
      // returns as soon as it lands instead of at the next poll (on average 25 ms later). The poll
      // stays, for filesystems without change notification.
      try {
        watcher = watch(options.registry.location, { persistent: false }, look);
        watcher.on('error', () => watcher?.close());
      } catch {
        watcher = undefined;
      }
      const timer = setInterval(look, pollMs);
      return () => {
        finish();
        child?.off('exit', onExit);
      };
    },

    async abandon(owner) {
      const child = children.get(owner.pid);
      if (!child || child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGTERM');
      const killed = await Promise.race([exited.then(() => true), delay(3_000).then(() => false)]);
      if (!killed) {
        child.kill('SIGKILL');
        await exited;
      }
    },
  };
}

/** The owner's own account of why it stopped: the last `stopped` JSON line of its log. */
function ownerOutcome(logFile: string, code: number | null, signal: NodeJS.Signals | null): Outcome {
  let reported: Outcome | undefined;
  try {
    for (const line of readFileSync(logFile, 'utf8').split('\n')) {
      if (!line.startsWith('{"event":"stopped"')) continue;
      try {
        const value = JSON.parse(line) as { exitCode?: unknown; kind?: unknown; reason?: unknown };
        if (typeof value.exitCode === 'number' && typeof value.reason === 'string') {
          reported = { exitCode: value.exitCode, kind: (value.kind as Outcome['kind']) ?? 'generic', reason: value.reason };
        }
      } catch {
        // a torn line: keep the previous one
      }
    }
  } catch {
    // no log: fall through to the bare exit status
  }
  if (reported) return code === null ? reported : { ...reported, exitCode: code };
  // No word in the log (a full disk): the exit code still says which failure it was.
  const known = Object.entries(failureKinds).find(([, kind]) => kind.exitCode === code);
  const how = signal ? `was killed by ${signal}` : known ? `exited with code ${code} (${known[1].summary})` : `exited with code ${code}`;
  return {
    kind: known ? (known[0] as FailureKind) : 'generic',
    exitCode: code ?? 1,
    reason: `the background owner ${how} before it was ready; see ${logFile}`,
  };
}

const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms).unref());
