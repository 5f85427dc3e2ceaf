// The WAN lab: two network namespaces (client side, gateway side) joined only through bench/wanlink.c,
// a user-space delay line between two TUN devices (the kernel here has no netem). Addresses come from
// 198.18.0.0/15 only. Used by `npm run bench:wan` and by spec/e2e/wan.spec.ts; needs root.
// The namespaces are spec/support/netns.ts's (teardown, interrupt and stale-run sweeping are its); this
// adds the link process, whose exit removes both TUN devices, and the compiled link binary.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { labProblem, type Lab, type Namespace } from '../spec/support/netns.js';
import { repoRoot, type Teardownable } from '../spec/support/processes.js';

export interface LinkOptions {
  /** One-way delay in ms (the RTT is twice this). */
  readonly delayMs: number;
  /** Random loss per packet and direction, in percent. */
  readonly lossPct?: number;
  /** Link rate in Mbit/s per direction; 0 = as fast as the delay line moves packets. */
  readonly rateMbit?: number;
  /** Bytes that may wait for the link (tail drop beyond), in KiB; only with a rate. */
  readonly queueKiB?: number;
  /** Seed of the loss pattern, so a run can be repeated. */
  readonly seed?: number;
}

export interface LabHost {
  readonly ns: Namespace;
  readonly address: string;
}

export interface WanLab {
  readonly client: LabHost;
  readonly gateway: LabHost;
  readonly link: LinkOptions;
  /** The delay line's pid (its CPU time is what the link costs this machine). */
  readonly linkPid: number;
  /** The link's drop counts per direction (random, queue, ring), once it has been closed. */
  readonly linkReport: () => string;
  /** `ip netns exec` in front of a command, as [command, args] for spawn. */
  inNs(host: LabHost, command: string, args: readonly string[]): [string, string[]];
  close(): Promise<void>;
}

let compiled: string | undefined;

/** Why this machine cannot build the lab, or undefined when it can. */
export function wanLabUnavailable(): string | undefined {
  const problem = labProblem();
  if (problem) return `the WAN lab cannot run: ${problem}`;
  for (const tool of ['ip', 'cc']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) return `the WAN lab needs \`${tool}\``;
  }
  return undefined;
}

function run(command: string, args: readonly string[]): string {
  const result = spawnSync(command, args, { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`${command} ${args.join(' ')} failed: ${result.stderr.trim()}`);
  return result.stdout;
}

/** Compile the delay line once per process into a temp dir (removed at teardown). */
function wanlinkBinary(scope: Teardownable): string {
  if (compiled) return compiled;
  const dir = mkdtempSync(join(tmpdir(), 'pam-wanlink-'));
  scope.teardown(() => {
    rmSync(dir, { recursive: true, force: true });
    compiled = undefined;
  });
  const binary = join(dir, 'wanlink');
  run('cc', ['-O2', '-Wall', '-o', binary, join(repoRoot, 'bench', 'wanlink.c')]);
  compiled = binary;
  return binary;
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/** Two namespaces of `net` joined by the delay line; the link stops at teardown (or close()). */
export async function openWanLab(scope: Teardownable, net: Lab, link: LinkOptions): Promise<WanLab> {
  const binary = wanlinkBinary(scope);
  const client: LabHost = { ns: net.namespace('wanc'), address: '198.18.0.1' };
  const gateway: LabHost = { ns: net.namespace('wang'), address: '198.18.0.2' };
  const args = [
    client.ns.name,
    gateway.ns.name,
    'wan0',
    String(link.delayMs),
    String(link.lossPct ?? 0),
    String(link.rateMbit ?? 0),
    String(link.queueKiB ?? 1024),
    String(link.seed ?? 1),
  ];
  // The link stands for the network, not for one more process competing for the two cores: it runs
  // SCHED_FIFO so its timing does not depend on the load (measured under a load average of 14: ping at
  // 40 ms RTT read 44.5 ms median at nice -10, 40.2 ms with SCHED_FIFO). It sleeps in ppoll between
  // packets, and the kernel's RT throttling keeps it from starving the machine.
  const child = spawn('chrt', ['-f', '10', binary, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  let report = '';
  child.stderr!.setEncoding('utf8').on('data', (text: string) => (report += text));
  const close = async () => {
    child.kill('SIGTERM');
    await exited(child);
  };
  scope.teardown(close);
  await new Promise<void>((resolve, reject) => {
    child.stdout!.setEncoding('utf8').on('data', (text: string) => {
      if (text.includes('ready')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`wanlink exited ${code} before it was ready: ${report.trim()}`)));
  });
  for (const [host, peer] of [
    [client, gateway],
    [gateway, client],
  ] as const) {
    net.ip(host.ns, 'addr', 'add', `${host.address}/32`, 'peer', `${peer.address}/32`, 'dev', 'wan0');
    // The TUN device's own queue (default 500 packets) would drop before the lab's queue does.
    net.ip(host.ns, 'link', 'set', 'wan0', 'txqueuelen', '10000', 'up');
  }
  return {
    client,
    gateway,
    link,
    linkPid: child.pid!,
    linkReport: () => report.trim(),
    inNs: (host, command, rest) => ['ip', ['netns', 'exec', host.ns.name, command, ...rest]],
    close,
  };
}
