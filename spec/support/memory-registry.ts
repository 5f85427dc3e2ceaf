// An in-memory registry for unit tests of the machines. Several fake "processes" share one store, and
// the store decides who is alive, so staleness and pid reuse behave as on disk (same contract suite).

import type { Registry, RegistryEntry, TunnelRecord } from '../../machines/ports.js';

export interface MemoryStore {
  /** pid → start time of the live process holding it. */
  readonly live: Map<number, string>;
  readonly entries: Map<number, RegistryEntry>;
  /** The process dies without cleaning up. */
  kill(pid: number): void;
  /** The pid now belongs to a different process. */
  reincarnate(pid: number, startTime: string): void;
}

export function createMemoryStore(): MemoryStore {
  const live = new Map<number, string>();
  return {
    live,
    entries: new Map(),
    kill: (pid) => void live.delete(pid),
    reincarnate: (pid, startTime) => void live.set(pid, startTime),
  };
}

export function createMemoryRegistry(store: MemoryStore, identity: { pid: number; startTime: string; location?: string }): Registry {
  store.live.set(identity.pid, identity.startTime);
  const tunnels = new Map<string, TunnelRecord>();
  const isLive = async (entry: RegistryEntry) => store.live.get(entry.pid) === entry.startTime;
  const persist = () => {
    if (tunnels.size === 0) store.entries.delete(identity.pid);
    else
      store.entries.set(identity.pid, {
        schema: 1,
        pid: identity.pid,
        startTime: identity.startTime,
        hostname: 'memory',
        tunnels: [...tunnels.values()],
      });
  };
  return {
    location: identity.location ?? `memory:${identity.pid}`,
    async put(record) {
      tunnels.set(record.id, record);
      persist();
    },
    async remove(id) {
      tunnels.delete(id);
      persist();
    },
    isLive,
    async entries() {
      const found: RegistryEntry[] = [];
      for (const entry of [...store.entries.values()]) {
        if (await isLive(entry)) found.push(entry);
        else store.entries.delete(entry.pid);
      }
      return found.sort((a, b) => a.pid - b.pid);
    },
  };
}
