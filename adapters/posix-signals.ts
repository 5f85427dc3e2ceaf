// Signals port over process signals: SIGINT, SIGTERM and SIGHUP end a tunnel in an orderly way.
// One listener per signal per process, shared by every watcher (tunnels, `pam shell`, `pam gateway`):
// a signal reaches each watcher exactly once, so no two parts of a process act on it separately.

import type { StopSignal } from '../machines/errors.js';
import type { Signals } from '../machines/ports.js';

export const stopSignals: readonly StopSignal[] = process.platform === 'win32' ? ['SIGINT', 'SIGTERM'] : ['SIGINT', 'SIGTERM', 'SIGHUP'];

interface Watcher {
  readonly signals: ReadonlySet<StopSignal>;
  readonly onSignal: (signal: StopSignal) => void;
}

interface Hub {
  readonly watchers: Set<Watcher>;
  readonly listeners: Map<StopSignal, () => void>;
}

const hubs = new WeakMap<NodeJS.Process, Hub>();

function hubOf(target: NodeJS.Process): Hub {
  let hub = hubs.get(target);
  if (!hub) {
    hub = { watchers: new Set(), listeners: new Map() };
    hubs.set(target, hub);
  }
  return hub;
}

/** Keep exactly one process listener for each signal some watcher wants, and none for the others. */
function sync(target: NodeJS.Process, hub: Hub): void {
  for (const signal of stopSignals) {
    const wanted = [...hub.watchers].some((watcher) => watcher.signals.has(signal));
    const installed = hub.listeners.get(signal);
    if (wanted && !installed) {
      // Installing a listener replaces Node's default "exit now" for this signal: from here on the
      // watchers decide (a tunnel: first signal → orderly stop, second while stopping → forced exit).
      const listener = () => {
        for (const watcher of [...hub.watchers]) if (watcher.signals.has(signal)) watcher.onSignal(signal);
      };
      hub.listeners.set(signal, listener);
      target.on(signal, listener);
    } else if (!wanted && installed) {
      hub.listeners.delete(signal);
      target.off(signal, installed);
    }
  }
}

/** Watch `only` (default: every stop signal) of `target`'s signals through the process's one listener. */
export function createProcessSignals(target: NodeJS.Process = process, only: readonly StopSignal[] = stopSignals): Signals {
  return {
    watch(onSignal) {
      const hub = hubOf(target);
      const watcher: Watcher = { signals: new Set(only.filter((signal) => stopSignals.includes(signal))), onSignal };
      hub.watchers.add(watcher);
      sync(target, hub);
      return () => {
        hub.watchers.delete(watcher);
        sync(target, hub);
      };
    },
  };
}

/** Signals that never fire: for tunnels whose owner (the shell) decides when they stop. */
export function createRelayedSignals(): Signals & { emit(signal: StopSignal): number } {
  const watchers = new Set<(signal: StopSignal) => void>();
  return {
    watch(onSignal) {
      watchers.add(onSignal);
      return () => watchers.delete(onSignal);
    },
    /** Deliver `signal` once to every current watcher; returns how many there were. */
    emit(signal) {
      const current = [...watchers];
      for (const onSignal of current) onSignal(signal);
      return current.length;
    },
  };
}
