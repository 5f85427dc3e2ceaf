// A network lab for tests: namespaces joined by veth pairs or a bridge, addressed from 198.18.0.0/15
// (or the RFC 5737 documentation ranges),
// processes started inside them, and everything deleted at teardown — also when a test fails, when it
// was only half built, and when the test process is interrupted (SIGINT/SIGTERM/SIGHUP).
//
// Every name starts with a per-run token (`pamlab-<pid>-<random>-`), so concurrent runs never clash,
// and a namespace left by a run that was SIGKILLed (its pid is gone) is swept by the next lab.
// Interfaces are created directly inside their namespaces, so nothing is ever added to the host's own.

import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { isProcessAlive } from '../../adapters/process-identity.js';
import { spawnProc, type Proc, type Teardownable } from './processes.js';
import { skipBecause, type TapTest } from './tap.js';

export interface Namespace {
  /** The name `ip netns` knows it by (token included). */
  readonly name: string;
}

export interface Lab {
  /** A new namespace with `lo` up. */
  namespace(label: string): Namespace;
  /** A veth pair between `a` and `b`, each end addressed (CIDR, e.g. `198.18.0.1/24`) and up. */
  link(a: Namespace, aAddress: string, b: Namespace, bAddress: string): void;
  /** A bridge in `hub` with one veth per member, each member's end addressed (CIDR) and up. */
  bridge(hub: Namespace, members: ReadonlyArray<{ ns: Namespace; address: string }>): void;
  /** `ip -n NS ...args` (e.g. a route); throws with ip's message if it fails. */
  ip(ns: Namespace, ...args: string[]): string;
  /** Run a short command inside `ns` to completion (e.g. `nft -f -`), returning its stdout. */
  run(ns: Namespace, command: string, args: readonly string[], input?: string): string;
  /** Start a long-running process inside `ns` (`ip netns exec NS command ...args`, no shell: the pid is the command's). */
  spawn(t: Teardownable, ns: Namespace, command: string, args: readonly string[], options?: { env?: NodeJS.ProcessEnv }): Proc;
}

const prefix = 'pamlab-';
/** Every lab this process has open, for the interrupt path. */
const openLabs = new Set<{ destroy(): void }>();
let exitHooked = false;

/**
 * Only 198.18.0.0/15 (RFC 2544 benchmarking) and the documentation ranges 192.0.2.0/24,
 * 198.51.100.0/24 and 203.0.113.0/24 (RFC 5737; the NAT lab's public and private segments) may be
 * assigned: tests never talk to real networks.
 */
function checkAddress(cidr: string): void {
  const match = /^198\.(18|19)\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(cidr);
  if (match && Number(match[2]) <= 255 && Number(match[3]) <= 255 && Number(match[4]) >= 15 && Number(match[4]) <= 32) return;
  const documentation = /^(192\.0\.2|198\.51\.100|203\.0\.113)\.(\d{1,3})\/(\d{1,2})$/.exec(cidr);
  if (documentation && Number(documentation[2]) <= 255 && Number(documentation[3]) >= 24 && Number(documentation[3]) <= 32) return;
  throw new Error(
    `lab address ${cidr} is not a CIDR inside 198.18.0.0/15 or the documentation ranges 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24`,
  );
}

function ip(args: readonly string[], input?: string): string {
  try {
    return execFileSync('ip', args, { encoding: 'utf8', input, stdio: ['pipe', 'pipe', 'pipe'], timeout: 10_000 });
  } catch (error) {
    const stderr = String((error as { stderr?: unknown }).stderr ?? '').trim();
    throw new Error(`ip ${args.join(' ')}: ${stderr || (error as Error).message}`);
  }
}

const namespaces = (): string[] =>
  ip(['netns', 'list'])
    .split('\n')
    .map((line) => line.split(' ')[0]!)
    .filter(Boolean);

function pidsIn(name: string): number[] {
  try {
    return ip(['netns', 'pids', name]).split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** Kill everything inside `name`, then delete it; never throws (teardown must go on). */
function removeNamespace(name: string): void {
  for (const pid of pidsIn(name)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  try {
    ip(['netns', 'del', name]);
  } catch {
    // never created, or already deleted
  }
}

/** Namespaces of earlier runs whose process is gone (SIGKILL leaves no chance to clean up). */
function sweepStale(): void {
  for (const name of namespaces()) {
    const owner = new RegExp(`^${prefix}(\\d+)-`).exec(name);
    if (owner && !isProcessAlive(Number(owner[1]))) removeNamespace(name);
  }
}

let probed: { problem: string | undefined } | undefined;

/** Why this machine cannot run a lab, or undefined when it can (root, and `ip netns add` works); probed once. */
export function labProblem(): string | undefined {
  probed ??= { problem: probe() };
  return probed.problem;
}

function probe(): string | undefined {
  if (process.getuid?.() !== 0) return 'not running as root';
  const name = `${prefix}${process.pid}-probe`;
  try {
    ip(['netns', 'add', name]);
  } catch (error) {
    return `\`ip netns add\` failed (${(error as Error).message})`;
  } finally {
    removeNamespace(name);
  }
  return undefined;
}

/**
 * Whether labs can run here. If not, one visible skip line on `t` saying why, or, under CI=true
 * (where root is promised), a failure. Call once per file, on the root test, before the lab tests.
 */
export function labAvailable(t: TapTest): boolean {
  const problem = labProblem();
  if (!problem) return true;
  if (process.env.CI === 'true') t.fail(`network lab unavailable under CI: ${problem}`);
  else skipBecause(t, `network lab tests skipped: ${problem} (under CI=true this is a failure)`);
  return false;
}

function hookExit(): void {
  if (exitHooked) return;
  exitHooked = true;
  const destroyAll = () => {
    for (const lab of [...openLabs]) lab.destroy();
  };
  process.once('exit', destroyAll);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => {
      destroyAll();
      // Die of the signal as if we had not listened (tap's own handlers run then).
      process.kill(process.pid, signal);
    });
  }
}

/**
 * A lab whose teardown is registered on `t` before anything is created. Undefined (after
 * `labAvailable`'s skip line or failure on `t`) when the machine cannot run one.
 */
export function netLab(t: TapTest): Lab | undefined {
  if (!labAvailable(t)) return undefined;
  return openLab(t);
}

/** The lab itself, for callers that did their own availability check (the WAN bench has no tap test). */
export function openLab(t: Teardownable): Lab {
  const token = `${prefix}${process.pid}-${randomBytes(2).toString('hex')}-`;
  const created: string[] = [];
  let interfaces = 0;
  const lab = {
    destroy() {
      openLabs.delete(lab);
      for (const name of created.splice(0).reverse()) removeNamespace(name);
    },
  };
  // Registered before the first namespace exists, so a failure half-way still deletes what was made.
  openLabs.add(lab);
  hookExit();
  t.teardown(() => {
    lab.destroy();
    const left = namespaces().filter((name) => name.startsWith(token));
    if (left.length > 0) throw new Error(`network lab left namespaces behind: ${left.join(', ')}`);
  });
  sweepStale();

  const veth = (a: Namespace, b: Namespace): [string, string] => {
    interfaces += 1;
    const [aEnd, bEnd] = [`pl${interfaces}a`, `pl${interfaces}b`];
    // Created directly inside both namespaces: deleting either namespace deletes the pair.
    ip(['link', 'add', aEnd, 'netns', a.name, 'type', 'veth', 'peer', 'name', bEnd, 'netns', b.name]);
    return [aEnd, bEnd];
  };
  const address = (ns: Namespace, device: string, cidr: string) => {
    checkAddress(cidr);
    ip(['-n', ns.name, 'addr', 'add', cidr, 'dev', device]);
    ip(['-n', ns.name, 'link', 'set', device, 'up']);
  };

  return {
    namespace(label) {
      if (!/^[a-z0-9]{1,12}$/.test(label)) throw new Error(`namespace label '${label}': 1-12 of a-z, 0-9`);
      const name = `${token}${label}`;
      created.push(name);
      ip(['netns', 'add', name]);
      ip(['-n', name, 'link', 'set', 'lo', 'up']);
      return { name };
    },
    link(a, aAddress, b, bAddress) {
      [aAddress, bAddress].forEach(checkAddress);
      const [aEnd, bEnd] = veth(a, b);
      address(a, aEnd, aAddress);
      address(b, bEnd, bAddress);
    },
    bridge(hub, members) {
      for (const member of members) checkAddress(member.address);
      interfaces += 1;
      const bridge = `plbr${interfaces}`;
      ip(['-n', hub.name, 'link', 'add', bridge, 'type', 'bridge']);
      ip(['-n', hub.name, 'link', 'set', bridge, 'up']);
      for (const member of members) {
        const [memberEnd, hubEnd] = veth(member.ns, hub);
        ip(['-n', hub.name, 'link', 'set', hubEnd, 'master', bridge]);
        ip(['-n', hub.name, 'link', 'set', hubEnd, 'up']);
        address(member.ns, memberEnd, member.address);
      }
    },
    ip: (ns, ...args) => ip(['-n', ns.name, ...args]),
    run: (ns, command, args, input) => ip(['netns', 'exec', ns.name, command, ...args], input),
    spawn: (t, ns, command, args, options = {}) => spawnProc(t, 'ip', ['netns', 'exec', ns.name, command, ...args], options),
  };
}
