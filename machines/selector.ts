// Which registered tunnels a `pam tunnel stop <selector>` means: an id (or unique prefix), a target
// name, a local port, or an owner pid. Pure, so ambiguity rules are tested without processes.

import { hostPort } from './address.js';
import { failure, type Failure } from './errors.js';
import type { RegistryEntry, TunnelRecord } from './ports.js';

export interface Selected {
  readonly entry: RegistryEntry;
  readonly tunnel: TunnelRecord;
}

export type Selection = { readonly ok: true; readonly selected: readonly Selected[] } | { readonly ok: false; readonly failure: Failure };

export function allTunnels(entries: readonly RegistryEntry[]): Selected[] {
  return entries.flatMap((entry) => entry.tunnels.map((tunnel) => ({ entry, tunnel })));
}

/**
 * The one check every selector and matcher goes through (stop, history, replay, completion): an empty
 * or blank selector is a prefix of every id, so it would match everything. It is a usage error instead.
 */
export function blankSelector(selector: string, what: string, fix: string): Failure | undefined {
  if (selector.trim() !== '') return undefined;
  return failure('usage', `the ${what} is empty: ${fix}`);
}

export function selectTunnels(entries: readonly RegistryEntry[], selector: string): Selection {
  const blank = blankSelector(
    selector,
    'tunnel selector',
    'name a tunnel by id, target, local port or pid (see `pam tunnel list`), or pass --all',
  );
  if (blank) return { ok: false, failure: blank };
  const tunnels = allTunnels(entries);
  const exact = tunnels.filter(({ tunnel }) => tunnel.id === selector);
  if (exact.length > 0) return { ok: true, selected: exact };

  const byPid = tunnels.filter(({ entry }) => String(entry.pid) === selector);
  if (byPid.length > 0) return { ok: true, selected: byPid };

  const candidates = tunnels.filter(
    ({ entry, tunnel }) =>
      tunnel.id.startsWith(selector) || tunnel.target === selector || String(tunnel.port) === selector || String(entry.pid) === selector,
  );
  if (candidates.length === 0) {
    return { ok: false, failure: failure('generic', `no running tunnel matches '${selector}': see \`pam tunnel list\``) };
  }
  if (candidates.length > 1) {
    const listed = candidates.map(
      ({ entry, tunnel }) => `${tunnel.id} (${tunnel.target} on ${hostPort(tunnel.host, tunnel.port)}, pid ${entry.pid})`,
    );
    return {
      ok: false,
      failure: failure('usage', `'${selector}' matches ${candidates.length} tunnels: ${listed.join(', ')}; name one by id, or use --all`),
    };
  }
  return { ok: true, selected: candidates };
}
