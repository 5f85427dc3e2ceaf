// The NAT lab (issue 17), built on spec/support/netns.ts: a public segment (namespace `pub`: the
// broker and coturn on 203.0.113.1, routing between the two routers), the client behind NAT router A
// (LAN 192.0.2.0/24) and the gateway behind NAT router B (LAN 198.51.100.0/24) with nothing forwarded
// in. A router is cone-like (`masquerade`, unsolicited inbound dropped in `input` so conntrack does
// not steal mappings) or symmetric (`masquerade fully-random`); router A can also drop all UDP from
// its LAN. The target listens on the gateway's LAN address only.

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { netLab, type Lab, type Namespace } from './netns.js';
import { pamBin, repoRoot, scratchDir, tunnelEnv, type Proc } from './processes.js';
import type { TapTest } from './tap.js';

export type Nat = 'cone' | 'symmetric';

export interface NatLabOptions {
  readonly clientNat: Nat;
  readonly gatewayNat: Nat;
  /** Router A drops every UDP packet from the client's LAN (only TCP leaves). */
  readonly clientUdpBlocked?: boolean;
}

export interface NatLab {
  readonly lab: Lab;
  readonly dir: string;
  readonly ns: { readonly pub: Namespace; readonly client: Namespace; readonly gateway: Namespace };
  readonly publicHost: string;
  readonly gatewayHost: string;
  readonly turnSecret: string;
  /** Router A's NAT changed in place (same lab): for checks that compare cone and symmetric. */
  setClientNat(nat: Nat): void;
  /** Start coturn in `pub` (UDP and TCP on 3478 at 203.0.113.1 and, as a second STUN server, 203.0.113.17; relaying from the first). */
  startCoturn(): Promise<Proc>;
  /** Start `pam broker` in `pub` on `port` (0: any), handing out STUN and TURN (UDP and TCP) with minted credentials. */
  startBroker(port?: number): Promise<{ proc: Proc; url: string; port: number }>;
  /** `pam gateway --broker … --site lab` in the gateway's namespace, serving `sink` on the gateway's LAN. */
  startGateway(brokerUrl: string, targetPort: number): Promise<{ proc: Proc; url: string; key: string }>;
  /** Environment for processes in the client's namespace (no PAM_ICE_HOSTS: every interface). */
  clientEnv(siteUrl: string, key: string): NodeJS.ProcessEnv;
}

export const brokerTokenForLab = 'nat-lab-broker-token';
export const gatewayTokenForLab = 'nat-lab-gateway-token';
const exchangePeerPath = join(repoRoot, 'build', 'spec', 'support', 'exchange-peer.js');
export const exchangePeer = exchangePeerPath;

function routerRules(lan: string, wanAddress: string, nat: Nat, dropUdp: boolean): string {
  return `
table ip pamnat {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr ${lan} ip daddr != ${lan} masquerade${nat === 'symmetric' ? ' fully-random' : ''}
  }
}
table ip pamfilter {
  chain input {
    type filter hook input priority filter; policy accept;
    ip daddr ${wanAddress} ct state established,related accept
    ip daddr ${wanAddress} drop
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
    ${dropUdp ? `ip saddr ${lan} meta l4proto udp drop` : ''}
    ip daddr ${lan} ct state established,related accept
    ip daddr ${lan} drop
  }
}
`;
}

export function natLab(t: TapTest, options: NatLabOptions): NatLab | undefined {
  const lab = netLab(t);
  if (!lab) return undefined;
  const dir = scratchDir(t, 'pam-natlab-');
  const pub = lab.namespace('pub');
  const routerA = lab.namespace('nata');
  const routerB = lab.namespace('natb');
  const client = lab.namespace('client');
  const gateway = lab.namespace('gateway');
  lab.link(pub, '203.0.113.1/28', routerA, '203.0.113.2/28');
  lab.link(pub, '203.0.113.17/28', routerB, '203.0.113.18/28');
  lab.link(routerA, '192.0.2.1/24', client, '192.0.2.2/24');
  lab.link(routerB, '198.51.100.1/24', gateway, '198.51.100.2/24');
  // The public segment's default route leads to a namespace that forwards nothing (packets to unknown networks
  // are dropped there; sendto succeeds), as a real TURN server's default route leads somewhere. Without one, coturn's relay sendto() to a peer's private host
  // candidate fails with ENETUNREACH and coturn 4.6 closes that whole allocation session; the client's next request
  // on the same 5-tuple opens a fresh session without an allocation and gets 438, then 400 Bad Request for every
  // CreatePermission (the "Allocate + CreatePermission succeed, then 400" seen before), and ICE never completes.
  const sink = lab.namespace('sink');
  lab.link(pub, '203.0.113.33/28', sink, '203.0.113.34/28');
  lab.ip(pub, 'route', 'add', 'default', 'via', '203.0.113.34');
  for (const router of [pub, routerA, routerB]) lab.run(router, 'sysctl', ['-q', '-w', 'net.ipv4.ip_forward=1']);
  lab.ip(client, 'route', 'add', 'default', 'via', '192.0.2.1');
  lab.ip(gateway, 'route', 'add', 'default', 'via', '198.51.100.1');
  lab.ip(routerA, 'route', 'add', 'default', 'via', '203.0.113.1');
  lab.ip(routerB, 'route', 'add', 'default', 'via', '203.0.113.17');
  lab.run(routerA, 'nft', ['-f', '-'], routerRules('192.0.2.0/24', '203.0.113.2', options.clientNat, options.clientUdpBlocked ?? false));
  lab.run(routerB, 'nft', ['-f', '-'], routerRules('198.51.100.0/24', '203.0.113.18', options.gatewayNat, false));

  const publicHost = '203.0.113.1';
  // pub's address on router B's link: a second STUN address for telling cone from symmetric NAT.
  const secondStunHost = '203.0.113.17';
  const turnSecret = 'nat-lab-turn-secret';
  const secretFile = join(dir, 'turn-secret');
  writeFileSync(secretFile, `${turnSecret}\n`, { mode: 0o600 });
  const baseEnv = (): NodeJS.ProcessEnv => ({
    ...tunnelEnv(dir, gatewayTokenForLab),
    PAM_ICE_HOSTS: undefined,
    PAM_BROKER_TOKEN: brokerTokenForLab,
  });

  return {
    lab,
    dir,
    ns: { pub, client, gateway },
    publicHost,
    gatewayHost: '198.51.100.2',
    turnSecret,
    setClientNat(nat) {
      lab.run(routerA, 'nft', ['flush', 'ruleset']);
      lab.run(routerA, 'nft', ['-f', '-'], routerRules('192.0.2.0/24', '203.0.113.2', nat, options.clientUdpBlocked ?? false));
    },
    async startCoturn() {
      const args = [
        '-n',
        `--listening-ip=${publicHost}`,
        `--listening-ip=${secondStunHost}`,
        `--relay-ip=${publicHost}`,
        '--listening-port=3478',
        '--min-port=49152',
        '--max-port=49999',
        '--use-auth-secret',
        `--static-auth-secret=${turnSecret}`,
        '--realm=pam-lab',
        '--no-tls',
        '--no-dtls',
        '--no-cli',
        '--log-file=stdout',
        '--simple-log',
        '--verbose',
        `--pidfile=${join(dir, 'turnserver.pid')}`,
      ];
      const proc = lab.spawn(t, pub, 'turnserver', args);
      await proc.line(/Total (UDP|General) servers|IPv4. TCP listener opened on : 203\.0\.113\.1:3478/, 15_000);
      return proc;
    },
    async startBroker(port = 0) {
      const args = [
        'broker',
        '--json',
        '--listen',
        `${publicHost}:${port}`,
        ...(process.env.LAB_STUN ? ['--ice-server', `stun:${publicHost}:3478`] : []),
        '--ice-server',
        `turn:${publicHost}:3478`,
        '--ice-server',
        `turn:${publicHost}:3478?transport=tcp`,
        '--turn-secret-file',
        secretFile,
      ];
      const proc = lab.spawn(t, pub, process.execPath, [pamBin, ...args], { env: baseEnv() });
      const listening = await proc.event('listening');
      return { proc, url: String(listening.url), port: Number(listening.port) };
    },
    async startGateway(brokerUrl, targetPort) {
      const args = ['gateway', '--broker', brokerUrl, '--site', 'lab', '--json', '--target', `sink=198.51.100.2:${targetPort}`];
      const proc = lab.spawn(t, gateway, process.execPath, [pamBin, ...args], { env: baseEnv() });
      const registered = await proc.event('registered', 30_000);
      return { proc, url: String(registered.url), key: String(registered.key) };
    },
    clientEnv(siteUrl, key) {
      return { ...baseEnv(), PAM_BROKER_TOKEN: undefined, PAM_GATEWAY_URL: siteUrl, PAM_GATEWAY_KEY: key };
    },
  };
}
