// `npm run bench:wan`: throughput and connect time over the WAN lab (bench/wan-lab.ts), direct TCP vs
// `ssh -L` vs a pam tunnel, over the same link in one run. Measured, never asserted. Needs root.
// Settings (environment): PAM_WAN_SCENARIOS (RTTs in ms, `rtt:loss%`; default "0,10,40,100,40:1"),
// PAM_BENCH_MIB (bulk size, default 64), PAM_WAN_TIMEOUT (seconds a bulk fetch may take, default 120),
// PAM_WAN_RATE_MBIT (link rate, default 0 = unlimited), PAM_WAN_QUEUE_KIB (default 4096),
// PAM_WAN_CONNECTS (connect samples per tool and RTT, default 5), PAM_WAN_ONLY (comma list of
// direct,ssh,pam to run a subset). For investigation: PAM_WAN_DIAG=1 prints where packets were dropped
// (the link's counters, UDP buffer overflows, TCP retransmits), PAM_WAN_TRACE=1 the MiB received each
// second of every fetch, PAM_WAN_GATEWAY_LOG=1 the pam gateway's stderr (e.g. how many parallel
// connections a tunnel opened). The pam client inherits the environment, so PAM_PARALLEL=N sets its
// connection count (decision 0016) for an A/B. `--quick` (or PAM_WAN_QUICK=1) is one scenario (40 ms unless PAM_WAN_SCENARIOS
// says otherwise), 32 MiB and 3 connects: a focused A/B run. Each fetch also reports the CPU time per MiB
// of the tool's own processes (ssh + sshd, or the pam tunnel + gateway) and of the link process, and
// pam's connects are split into phases from the owners' journals (connectPhases).
// Interrupting it (SIGINT/SIGTERM) still removes the lab.

import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pamBin, repoRoot, scratchDir, spawnProc, tunnelEnv, type Teardownable } from '../spec/support/processes.js';
import { openLab } from '../spec/support/netns.js';
import { openWanLab, wanLabUnavailable, type LabHost, type WanLab } from './wan-lab.js';

const peerJs = join(repoRoot, 'build', 'bench', 'wan-peer.js');
const quick = process.argv.includes('--quick') || process.env.PAM_WAN_QUICK === '1';
const mib = Number(process.env.PAM_BENCH_MIB ?? (quick ? 32 : 64));
const timeoutS = Number(process.env.PAM_WAN_TIMEOUT ?? 120);
const connects = Number(process.env.PAM_WAN_CONNECTS ?? (quick ? 3 : 5));
const rateMbit = Number(process.env.PAM_WAN_RATE_MBIT ?? 0);
const queueKiB = Number(process.env.PAM_WAN_QUEUE_KIB ?? 4096);
const only = new Set((process.env.PAM_WAN_ONLY ?? 'direct,ssh,pam').split(','));
const scenarios = (process.env.PAM_WAN_SCENARIOS ?? (quick ? '40' : '0,10,40,100,40:1')).split(',').map((item) => {
  const [rtt, loss] = item.split(':');
  return { rttMs: Number(rtt), lossPct: Number(loss ?? 0) };
});
const servePort = 5201;
/** Median connect time per tool at RTT 0, the part of a connect that is not round trips. */
const connectAtZero: Record<string, number> = {};
const sshPort = 6201;

const cleanups: Array<() => unknown> = [];
const scope: Teardownable = { teardown: (fn) => void cleanups.push(fn) };
/** Run the teardowns registered after `mark`, newest first, each bounded in time. */
async function unwind(mark: number): Promise<void> {
  while (cleanups.length > mark) {
    try {
      await Promise.race([cleanups.pop()!(), new Promise((resolve) => setTimeout(resolve, 5_000).unref())]);
    } catch (error) {
      process.stderr.write(`cleanup: ${error instanceof Error ? error.message : String(error)}\n`);
    }
  }
}
let cleaning: Promise<void> | undefined;
/** Every teardown, once; the signal handler and main share it. */
const cleanUp = () => (cleaning ??= unwind(0));
// `on`, not `once`: the namespace helper re-raises the signal after deleting its namespaces, and this
// process must live until the rest of the teardown (link process, temp dirs) is done.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (cleaning) return;
    process.stderr.write(`\n${signal}: removing the lab\n`);
    void cleanUp().then(() => process.exit(signal === 'SIGINT' ? 130 : 143));
  });
}

const log = (text: string) => process.stderr.write(`${text}\n`);
const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? NaN;

/** Run a wan-peer mode inside a namespace and return its JSON line. */
async function peer(
  lab: WanLab,
  host: LabHost,
  args: readonly string[],
  env: NodeJS.ProcessEnv = {},
  wrap: readonly string[] = [],
): Promise<Record<string, unknown>> {
  const [command, ...rest] = [...wrap, process.execPath, peerJs, ...args] as [string, ...string[]];
  const proc = spawnProc(scope, ...lab.inNs(host, command, rest), { env });
  const code = await proc.exited;
  const line = proc.stdout.trim().split('\n').pop() ?? '';
  if (process.env.PAM_WAN_TRACE && proc.stderr) log(`  ${args[0]} trace: ${proc.stderr.trim()}`);
  if (code !== 0 || !line.startsWith('{')) throw new Error(`wan-peer ${args[0]} exited ${code}: ${proc.stderr.trim()}`);
  return JSON.parse(line) as Record<string, unknown>;
}

/** Pids in a namespace whose command name matches. */
function pidsInNs(ns: string, command: RegExp): number[] {
  const pids = spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).stdout.split(/\s+/).filter(Boolean);
  return pids.map(Number).filter((pid) => {
    try {
      return command.test(readFileSync(`/proc/${pid}/comm`, 'utf8').trim());
    } catch {
      return false; // gone already
    }
  });
}

function killInNs(ns: string, command: string): void {
  for (const pid of pidsInNs(ns, new RegExp(`^${command}$`))) {
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      // gone already
    }
  }
}

const clockTicks = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;
/** CPU time (user + system, ms) the processes have used so far; a process that is gone counts 0. */
function cpuMs(pids: readonly number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    try {
      // Fields after the command name (which may hold spaces) start at field 3: utime and stime are 14 and 15.
      const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      // gone
    }
  }
  return (ticks * 1000) / clockTicks;
}

/** A private sshd in the gateway namespace: its own host key and config, key authentication only. */
async function startSshd(lab: WanLab, dir: string): Promise<string[]> {
  const keygen = (file: string) => spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, file)]);
  keygen('host_key');
  keygen('client_key');
  writeFileSync(join(dir, 'authorized_keys'), readFileSync(join(dir, 'client_key.pub')));
  const config = join(dir, 'sshd_config');
  writeFileSync(
    config,
    [
      `ListenAddress ${lab.gateway.address}:22`,
      `HostKey ${join(dir, 'host_key')}`,
      `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'PubkeyAuthentication yes',
      'PermitRootLogin prohibit-password',
      'UsePAM no',
      'StrictModes no',
      'AllowTcpForwarding yes',
      'PidFile none',
      '',
    ].join('\n'),
  );
  // Debian's sshd refuses to start without its privilege-separation directory (systemd makes it).
  if (!existsSync('/run/sshd')) {
    mkdirSync('/run/sshd', { mode: 0o755 });
    scope.teardown(() => rmdirSync('/run/sshd'));
  }
  const sshd = spawnProc(scope, ...lab.inNs(lab.gateway, '/usr/sbin/sshd', ['-D', '-e', '-f', config]));
  await sshd.line(/Server listening/, 10_000);
  return [
    '-F',
    '/dev/null',
    '-i',
    join(dir, 'client_key'),
    '-o',
    'IdentitiesOnly=yes',
    '-o',
    'BatchMode=yes',
    '-o',
    'StrictHostKeyChecking=no',
    '-o',
    'UserKnownHostsFile=/dev/null',
    '-o',
    'LogLevel=ERROR',
    '-o',
    'ExitOnForwardFailure=yes',
    '-f',
    '-N',
    '-L',
    `127.0.0.1:${sshPort}:127.0.0.1:${servePort}`,
    `root@${lab.gateway.address}`,
  ];
}

/** The link's round trip: ICMP `ping` (kernel timestamps) when installed, else a UDP echo between two Node processes. */
async function linkRoundTrip(lab: WanLab): Promise<{ tool: string; medianMs: number; minMs: number }> {
  if (spawnSync('sh', ['-c', 'command -v ping']).status === 0) {
    const result = spawnSync(...lab.inNs(lab.client, 'ping', ['-n', '-c', '20', '-i', '0.05', lab.gateway.address]), { encoding: 'utf8' });
    const times = [...result.stdout.matchAll(/time=([\d.]+) ms/g)].map((match) => Number(match[1]));
    if (times.length > 0) return { tool: 'ping', medianMs: median(times), minMs: Math.min(...times) };
  }
  // The echo and the pinger run at the link's priority, so the load on the machine does not add to the RTT.
  spawnProc(scope, ...lab.inNs(lab.gateway, 'nice', ['-n', '-10', process.execPath, peerJs, 'udp-echo', lab.gateway.address, '7']));
  await new Promise((resolve) => setTimeout(resolve, 300));
  const udp = await peer(lab, lab.client, ['udp-ping', lab.gateway.address, '7', '20'], {}, ['nice', '-n', '-10']);
  return { tool: 'UDP echo', medianMs: Number(udp.medianMs), minMs: Number(udp.minMs) };
}

interface Row {
  scenario: string;
  pingMs: number;
  bulk: Record<string, string>;
  rates: Record<string, number>;
  connect: Record<string, string>;
  /** CPU ms per MiB fetched: the tool's processes, and the link process during that fetch. */
  cpu: Record<string, string>;
}

function bulkText(result: Record<string, unknown>): string {
  const rate = Number(result.mibps).toFixed(1);
  if (result.ok === true) return `${rate} MiB/s`;
  if (result.finished === true) return `CORRUPT (${result.bytes} bytes)`;
  return `did not finish in ${timeoutS} s (${(Number(result.bytes) / 1048576).toFixed(1)} MiB, ${rate} MiB/s)`;
}

/**
 * Where a pam `-bg` connect's time went, from each owner's journal (wall-clock times of its state
 * changes) and the bench's own start and first-byte times: median ms of each phase, and in ping RTTs.
 */
function connectPhases(journals: string, samples: ReadonlyArray<Record<string, unknown>>, pingMs: number): string {
  const phases: Record<string, number[]> = {};
  for (const sample of samples) {
    const id = /"id":"([0-9a-f]+)"/.exec(String(sample.stdout))?.[1];
    let lines: Array<{ at: string; state?: string }>;
    try {
      lines = readFileSync(join(journals, `${id}.jsonl`), 'utf8')
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as { at: string; state?: string });
    } catch {
      continue;
    }
    const started = Number(sample.startedAt);
    const at = (state: string) => Date.parse(lines.find((line) => line.state === state)?.at ?? '');
    const marks: Array<[string, number]> = [
      ['start → owner running', at('idle') - started],
      ['key + offer/answer', at('connecting.establishing') - at('connecting.negotiating')],
      ['ICE + DTLS + SCTP + channel', at('connecting.publishing') - at('connecting.establishing')],
      ['ready → command returned', started + Number(sample.readyMs) - at('ready.serving.linked')],
      ['returned → first byte', Number(sample.usableMs) - Number(sample.readyMs)],
    ];
    for (const [name, ms] of marks) if (Number.isFinite(ms)) (phases[name] ??= []).push(ms);
  }
  return Object.entries(phases)
    .map(([name, values]) => `${name} ${median(values).toFixed(0)} ms${pingMs > 1 ? ` (${(median(values) / pingMs).toFixed(1)} RTT)` : ''}`)
    .join('; ');
}

async function scenario(rttMs: number, lossPct: number): Promise<Row> {
  const name = `RTT ${rttMs} ms${lossPct ? `, ${lossPct} % loss` : ''}`;
  log(`\n${name} (load average ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')})`);
  const mark = cleanups.length;
  // Before the lab, so it is removed after every process in the namespaces is gone (a -bg owner still
  // alive would write its registry into it again).
  const dir = scratchDir(scope, 'pam-wan-');
  const lab = await openWanLab(scope, openLab(scope), { delayMs: rttMs / 2, lossPct, rateMbit, queueKiB, seed: 7 });
  const gw = lab.gateway;
  const server = spawnProc(scope, ...lab.inNs(gw, process.execPath, [peerJs, 'serve', '0.0.0.0', String(servePort), String(mib), 'bulk']));
  await server.line(/listening/, 10_000);
  const ping = await linkRoundTrip(lab);
  const pingMs = ping.medianMs;
  const off = rttMs > 0 ? `, ${(((pingMs - rttMs) / rttMs) * 100).toFixed(1)} % off 2 × delay (check: within 5 %)` : '';
  log(`  ${ping.tool} round trip median ${pingMs.toFixed(2)} ms, min ${ping.minMs.toFixed(2)} ms (link: 2 × ${rttMs / 2} ms${off})`);

  const row: Row = { scenario: name, pingMs, bulk: {}, rates: {}, connect: {}, cpu: {} };
  const fetch = async (label: string, port: number, host = '127.0.0.1', tool: () => number[] = () => []) => {
    const pids = tool();
    const [toolBefore, linkBefore] = [cpuMs(pids), cpuMs([lab.linkPid])];
    const result = await peer(lab, lab.client, ['fetch', host, String(port), String(mib), 'bulk', String(timeoutS)]);
    const moved = Number(result.bytes) / 1048576;
    const perMiB = (ms: number) => (moved > 0 ? (ms / moved).toFixed(0) : '–');
    row.cpu[label] = `${pids.length > 0 ? `${perMiB(cpuMs(pids) - toolBefore)} + ` : ''}${perMiB(cpuMs([lab.linkPid]) - linkBefore)}`;
    row.bulk[label] = bulkText(result);
    // An unfinished fetch still has a rate (what it moved before the cut-off): the ratio is then a ceiling.
    row.rates[label] = result.ok === true || result.finished !== true ? Number(result.mibps) : 0;
    log(`  bulk ${mib} MiB ${label}: ${row.bulk[label]}; CPU ms per MiB: ${pids.length > 0 ? 'tool + ' : ''}link ${row.cpu[label]}`);
  };
  const connectTimes = async (
    label: string,
    command: readonly string[],
    port: number,
    after: (stdout: string) => void,
    env: NodeJS.ProcessEnv = {},
  ) => {
    const times: number[] = [];
    const samples: Array<Record<string, unknown>> = [];
    for (let i = 0; i < connects; i += 1) {
      const ready = await peer(lab, lab.client, ['ready', String(port), '60', '--', ...command], env);
      if (ready.ok !== true) throw new Error(`${label} did not connect: ${JSON.stringify(ready)}`);
      times.push(Number(ready.usableMs));
      samples.push(ready);
      // All but the last are stopped at once; the last one carries the bulk fetch.
      if (i < connects - 1) after(String(ready.stdout));
      else return { stdout: String(ready.stdout), median: median(times), samples };
    }
    throw new Error('no connect samples');
  };
  // In round trips: the time over the same tool's time at RTT 0 (process start-up, key exchange CPU)
  // divided by the measured RTT, when a 0 ms run came first; else the whole time over the RTT.
  const roundTrips = (tool: string, ms: number) => {
    if (rttMs === 0) {
      connectAtZero[tool] = ms;
      return '';
    }
    const base = connectAtZero[tool];
    const over = base === undefined ? undefined : (ms - base) / pingMs;
    // A 0 ms median above this one is start-up noise: then only the whole time in round trips is shown.
    return `, ${(ms / pingMs).toFixed(1)} RTT${over !== undefined && over >= 0 ? `, +${over.toFixed(1)} over RTT 0` : ''}`;
  };

  if (only.has('direct')) await fetch('direct', servePort, gw.address);
  if (only.has('ssh')) {
    const sshArgs = await startSshd(lab, dir);
    const ssh = await connectTimes('ssh -f', ['ssh', ...sshArgs], sshPort, () => killInNs(lab.client.ns.name, 'ssh'));
    row.connect['ssh -f -N -L'] = `${ssh.median.toFixed(0)} ms${roundTrips('ssh', ssh.median)}`;
    log(`  connect ssh -f -N -L (median of ${connects}): ${row.connect['ssh -f -N -L']}`);
    await fetch('ssh -L', sshPort, '127.0.0.1', () => [
      ...pidsInNs(lab.client.ns.name, /^ssh$/),
      ...pidsInNs(lab.gateway.ns.name, /^sshd/),
    ]);
    killInNs(lab.client.ns.name, 'ssh');
  }
  if (only.has('pam')) {
    const env = { ...tunnelEnv(dir, 'wan-bench-token-7d3e01'), PAM_ICE_HOSTS: gw.address };
    const gateway = spawnProc(
      scope,
      ...lab.inNs(gw, process.execPath, [
        pamBin,
        'gateway',
        '--listen',
        `${gw.address}:8765`,
        '--json',
        '--target',
        `src=127.0.0.1:${servePort}`,
      ]),
      { env },
    );
    await gateway.event('listening', 20_000);
    const clientEnv = { ...env, PAM_ICE_HOSTS: lab.client.address, PAM_GATEWAY_URL: `http://${gw.address}:8765` };
    const stop = (stdout: string) => {
      const pid = Number(/"pid":(\d+)/.exec(stdout)?.[1]);
      if (pid > 0) process.kill(pid, 'SIGTERM');
    };
    const pam = await connectTimes('pam -bg', [process.execPath, pamBin, 'tunnel', 'start', 'src', '-bg', '--json'], 0, stop, clientEnv);
    row.connect['pam tunnel start -bg'] = `${pam.median.toFixed(0)} ms${roundTrips('pam', pam.median)}`;
    log(`  connect pam tunnel start -bg (median of ${connects}): ${row.connect['pam tunnel start -bg']}`);
    log(`  pam connect phases (median of ${connects}): ${connectPhases(join(dir, 'registry', 'journal'), pam.samples, pingMs)}`);
    const owner = Number(/"pid":(\d+)/.exec(pam.stdout)?.[1]);
    await fetch('pam tunnel', Number(/"port":(\d+)/.exec(pam.stdout)?.[1]), '127.0.0.1', () => [owner, gateway.pid]);
    if (process.env.PAM_WAN_GATEWAY_LOG) log(gateway.stderr);
    if (process.env.PAM_MUX_TRACE)
      log(
        gateway.stderr
          .split('\n')
          .filter((l) => l.includes('mux trace') && !l.includes('sentMiB/s=0.00'))
          .join('\n'),
      );
    stop(pam.stdout);
  }
  if (process.env.PAM_WAN_DIAG) {
    // Where packets were lost, for investigation runs: UDP receive-buffer overflows and TCP retransmits per side.
    for (const host of [lab.client, lab.gateway]) {
      const counters = spawnSync(
        ...lab.inNs(host, 'nstat', ['-az', 'UdpRcvbufErrors', 'UdpSndbufErrors', 'UdpInErrors', 'TcpRetransSegs']),
        { encoding: 'utf8' },
      ).stdout;
      const link = spawnSync(...lab.inNs(host, 'ip', ['-s', 'link', 'show', 'wan0']), { encoding: 'utf8' }).stdout;
      const [rx, tx] = [...link.matchAll(/^\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)/gm)].map(
        (match) => `${match[2]} packets, ${match[3]} errors, ${match[4]} dropped`,
      );
      log(`  ${host.ns.name} wan0: RX ${rx}; TX ${tx}`);
      log(
        `  ${host.ns.name}: ${counters
          .split('\n')
          .filter((line) => /^\w+\s+\d/.test(line))
          .map((line) => line.split(/\s+/).slice(0, 2).join('='))
          .join(' ')}`,
      );
    }
  }
  await unwind(mark);
  if (process.env.PAM_WAN_DIAG) log(lab.linkReport().replace(/^/gm, '  '));
  return row;
}

async function main(): Promise<void> {
  const unavailable = wanLabUnavailable();
  if (unavailable) throw new Error(unavailable);
  if (!existsSync(peerJs)) throw new Error('build first: npm run build');
  log(
    `pam-tunnel WAN bench — node ${process.version}, ${new Date().toISOString()}, load average ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}, ${mib} MiB bulk, link rate ${rateMbit || 'unlimited'} Mbit/s, queue ${queueKiB} KiB`,
  );
  const rows: Row[] = [];
  for (const { rttMs, lossPct } of scenarios) rows.push(await scenario(rttMs, lossPct));
  const columns = [
    'link',
    'ping RTT',
    'direct',
    'ssh -L',
    'pam tunnel',
    'pam / ssh',
    'connect pam -bg',
    'connect ssh -f',
    'CPU ms/MiB ssh',
    'CPU ms/MiB pam',
  ];
  const lines = rows.map((row) => [
    row.scenario,
    `${row.pingMs.toFixed(1)} ms`,
    row.bulk.direct ?? '',
    row.bulk['ssh -L'] ?? '',
    row.bulk['pam tunnel'] ?? '',
    row.rates['ssh -L'] && row.bulk['pam tunnel']
      ? `${row.bulk['pam tunnel'].startsWith('did not') ? '≤ ' : ''}${((row.rates['pam tunnel'] ?? 0) / row.rates['ssh -L']).toFixed(2)}×`
      : '',
    row.connect['pam tunnel start -bg'] ?? '',
    row.connect['ssh -f -N -L'] ?? '',
    row.cpu['ssh -L'] ?? '',
    row.cpu['pam tunnel'] ?? '',
  ]);
  process.stdout.write(`\n| ${columns.join(' | ')} |\n|${columns.map(() => ' --- |').join('')}\n`);
  for (const line of lines) process.stdout.write(`| ${line.join(' | ')} |\n`);
  process.stdout.write(
    `\nbulk: ${mib} MiB fetched from the gateway side, sha256-checked, cut off after ${timeoutS} s; link rate ${rateMbit || 'unlimited'}` +
      ` Mbit/s, queue ${queueKiB} KiB. connect: start → first byte through the local port, median of ${connects};` +
      ' "N RTT" = time / ping RTT; "+N over RTT 0" = (time − the same tool\'s time at RTT 0) / ping RTT.' +
      " CPU ms/MiB: user + system time per MiB fetched of the tool's processes (ssh + sshd; tunnel + gateway) + of the link process.\n",
  );
}

main()
  .catch((error: unknown) => {
    process.stderr.write(`bench:wan failed: ${error instanceof Error ? error.stack : String(error)}\n`);
    process.exitCode = 1;
  })
  .finally(async () => {
    await cleanUp();
    setTimeout(() => process.exit(), 1000).unref();
  });
