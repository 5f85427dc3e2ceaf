// Helpers for broker tests: start `pam broker` and a broker-registered `pam gateway`, and list the TCP
// ports a process listens on (to prove a broker gateway opens none).

import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { pam, tunnelEnv, type Proc, type Teardownable } from './processes.js';

export const brokerToken = 'broker-spec-token-9d1e';

export async function startBrokerProc(
  t: Teardownable,
  dir: string,
  extra: readonly string[] = [],
  env: NodeJS.ProcessEnv = {},
): Promise<{ proc: Proc; url: string; port: number }> {
  const listen = extra.includes('--listen') ? [] : ['--listen', '127.0.0.1:0'];
  const proc = pam(t, ['broker', '--json', ...listen, ...extra], {
    env: { ...tunnelEnv(dir, 'unused'), PAM_BROKER_TOKEN: brokerToken, ...env },
  });
  const listening = await proc.event('listening', 60_000);
  return { proc, url: String(listening.url), port: Number(listening.port) };
}

/** `pam gateway --broker URL --site SITE`; resolves once it printed `registered`. */
export async function startBrokerGateway(
  t: Teardownable,
  dir: string,
  token: string,
  broker: string,
  site: string,
  targets: Record<string, number>,
  options: { env?: NodeJS.ProcessEnv; extra?: readonly string[]; wait?: boolean; timeoutMs?: number } = {},
): Promise<{ proc: Proc; url: string; key: string }> {
  const args = [
    'gateway',
    '--broker',
    broker,
    '--site',
    site,
    '--json',
    ...(options.extra ?? []),
    ...Object.entries(targets).flatMap(([name, port]) => ['--target', `${name}=127.0.0.1:${port}`]),
  ];
  const proc = pam(t, args, { env: { ...tunnelEnv(dir, token), PAM_BROKER_TOKEN: brokerToken, ...options.env } });
  if (options.wait === false) return { proc, url: `${broker}/sites/${site}`, key: '' };
  const registered = await proc.event('registered', options.timeoutMs);
  return { proc, url: String(registered.url), key: String(registered.key) };
}

/** TCP ports `pid` listens on (IPv4 and IPv6), from /proc: its socket inodes joined with the LISTEN rows. */
export function listeningTcpPorts(pid: number): number[] {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const match = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (match) inodes.add(match[1]!);
    } catch {
      // closed meanwhile
    }
  }
  const ports: number[] = [];
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const row of readFileSync(table, 'utf8').split('\n').slice(1)) {
      const fields = row.trim().split(/\s+/);
      if (fields[3] === '0A' && inodes.has(fields[9] ?? '')) ports.push(parseInt(fields[1]!.split(':')[1]!, 16));
    }
  }
  return ports;
}
