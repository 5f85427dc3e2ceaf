// The fake DiagnosePorts: a table of what answers, what fails and how, for unit tests of the diagnosis
// (spec/machines/diagnose.spec.ts); it passes the same contract as the real checks.

import { TunnelError, type FailureKind } from '../../machines/errors.js';
import type { DiagnosePorts, SignallingProbe, StunServerRef, TurnServerRef } from '../../machines/diagnose.js';

export interface FakeNetwork {
  /** URLs that answer, with what step 2 learns there. */
  readonly sites: Record<string, SignallingProbe>;
  /** A URL that answers but whose site/key fails with this kind. */
  readonly siteFailures?: Record<string, { kind: FailureKind; message: string }>;
  /** "host:port" of STUN servers that answer; `symmetric`: each server sees another port. */
  readonly stun: readonly string[];
  readonly symmetric?: boolean;
  readonly turnCredential?: string;
  readonly tunnel?: { path: string; pair: string; bytes: number } | { kind: FailureKind; message: string };
}

export function createFakeDiagnosePorts(network: FakeNetwork): DiagnosePorts & { close(): void; readonly calls: string[] } {
  const calls: string[] = [];
  const publicPorts = new Map<string, number>();
  let nextPort = 40_000;
  const key = (server: StunServerRef) => `${server.host}:${server.port}`;
  return {
    calls,
    async reach(url) {
      calls.push('reach');
      if (!network.sites[url] && !network.siteFailures?.[url])
        throw new TunnelError('gatewayUnreachable', `${url} is unreachable (ECONNREFUSED)`);
      return `${url} answers`;
    },
    async site(url) {
      calls.push('site');
      const failure = network.siteFailures?.[url];
      if (failure) throw new TunnelError(failure.kind, failure.message);
      const site = network.sites[url];
      if (!site) throw new TunnelError('gatewayUnreachable', `gateway ${url} is unreachable (ECONNREFUSED)`);
      return site;
    },
    async stunBinding(server, socket) {
      calls.push(`stun ${key(server)}`);
      if (!network.stun.includes(key(server))) throw new Error('no answer within 5 s');
      const mapping = network.symmetric ? `${socket}/${key(server)}` : String(socket);
      if (!publicPorts.has(mapping)) publicPorts.set(mapping, nextPort++);
      return { address: '203.0.113.2', port: publicPorts.get(mapping)! };
    },
    async turnAllocate(server: TurnServerRef) {
      calls.push(`turn ${key(server)}`);
      if (!network.stun.includes(key(server))) throw new Error('no answer within 5 s');
      if (server.credential !== network.turnCredential) throw new Error('Allocate refused: 401 Unauthorized');
      return { address: server.host, port: 49_152 };
    },
    async testTunnel(_url, target) {
      calls.push(`tunnel ${target}`);
      const tunnel = network.tunnel;
      if (!tunnel) throw new TunnelError('gatewayUnreachable', 'no tunnel configured in the fake');
      if ('kind' in tunnel) throw new TunnelError(tunnel.kind, tunnel.message);
      return tunnel;
    },
    close() {},
  };
}
