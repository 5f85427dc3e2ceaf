// Over a lossy WAN link (the lab of bench/wan-lab.ts: 40 ms RTT, 1 % random loss each way), a pam
// tunnel delivers every byte in order in both directions: the SCTP buffers sized for long round trips
// (docs/decisions/0009-window-sizing.md) must never lose, duplicate or reorder data. Bytes are checked
// by sha256; nothing here is timed. Needs root (namespaces, TUN devices): skipped with one line when
// not root outside CI, and CI runs as root.

import t from 'tap';
import { join } from 'node:path';
import { openWanLab, wanLabUnavailable } from '../../bench/wan-lab.js';
import { netLab } from '../support/netns.js';
import { repoRoot, scratchDir, spawnProc, tunnelEnv, type Teardownable } from '../support/processes.js';

const peerJs = join(repoRoot, 'build', 'bench', 'wan-peer.js');
const mib = 8;

// netLab() prints the one skip line (or, under CI=true, fails) when namespaces cannot be made here.
const net = netLab(t);
if (net) {
  t.test(`${mib} MiB each way through a pam tunnel over 40 ms RTT with 1 % loss arrive sha256-equal`, async (t) => {
    const missing = wanLabUnavailable();
    if (missing) throw new Error(missing);
    const lab = await openWanLab(t, net, { delayMs: 20, lossPct: 1, seed: 19 });
    const gw = lab.gateway;
    const dir = scratchDir(t, 'pam-wan-spec-');
    const server = spawnProc(t, ...lab.inNs(gw, process.execPath, [peerJs, 'serve', '127.0.0.1', '5201', String(mib), 'spec']));
    await server.line(/listening/, 20_000);
    const env = { ...tunnelEnv(dir, 'wan-spec-token-5f1c9a2e'), PAM_ICE_HOSTS: gw.address };
    const gateway = spawnProc(
      t,
      ...lab.inNs(gw, process.execPath, [
        join(repoRoot, 'bin', 'pam'),
        'gateway',
        '--listen',
        `${gw.address}:8765`,
        '--json',
        '--target',
        'data=127.0.0.1:5201',
      ]),
      { env },
    );
    await gateway.event('listening', 30_000);
    const clientEnv = { ...env, PAM_ICE_HOSTS: lab.client.address, PAM_GATEWAY_URL: `http://${gw.address}:8765` };
    const [command, args] = lab.inNs(lab.client, process.execPath, [
      join(repoRoot, 'bin', 'pam'),
      'tunnel',
      'start',
      'data',
      '-fg',
      '--json',
    ]);
    const tunnel = spawnProc(t, command, args, { env: clientEnv });
    const port = String((await tunnel.event('ready', 60_000)).port);

    const transfer = async (scope: Teardownable, mode: 'fetch' | 'upload') => {
      const proc = spawnProc(
        scope,
        ...lab.inNs(lab.client, process.execPath, [peerJs, mode, '127.0.0.1', port, String(mib), 'spec', '240']),
      );
      t.equal(await proc.exited, 0, `${mode} exited 0 ${proc.stderr}`);
      return JSON.parse(proc.stdout.trim().split('\n').pop() ?? '{}') as { ok?: boolean; bytes?: number; finished?: boolean };
    };
    // Both directions at once, on two connections of the one tunnel.
    const [down, up] = await Promise.all([transfer(t, 'fetch'), transfer(t, 'upload')]);
    t.same(
      { ok: down.ok, finished: down.finished, bytes: down.bytes },
      { ok: true, finished: true, bytes: mib * 1048576 },
      'gateway → client: every byte, sha256-equal',
    );
    t.same(
      { ok: up.ok, finished: up.finished },
      { ok: true, finished: true },
      'client → gateway: the target saw the sha256 of what was sent',
    );
    t.equal(tunnel.child.exitCode, null, 'the tunnel is still up');
  });
}
