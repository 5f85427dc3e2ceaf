// Real adapters behind the tunnel's ports. The WebRTC transport is imported on first use, so commands
// and failures that never reach the gateway (usage errors, busy ports) don't pay werift's import cost.

import type { Link, Negotiation, NegotiateRequest, Transport } from '../machines/ports.js';
import type { TunnelPorts } from '../machines/tunnel.actors.js';
import { createProcessSignals } from '../adapters/posix-signals.js';
import { createShellRunner } from '../adapters/shell-runner.js';
import { createTcpListenerFactory } from '../adapters/tcp-listener.js';
import { openFsRegistry } from '../adapters/fs-registry.js';
import { createPidFiles } from '../adapters/pid-files.js';
import { createBackgroundOwners, ownerIdVariable } from '../adapters/background-owner.js';
import { logDir } from '../adapters/fs-journal.js';
import { join } from 'node:path';
import type { BackgroundOwners, Registry, Signals } from '../machines/ports.js';
import type { GatewayKeyCheck } from '../adapters/known-gateways.js';
import { iceHosts, iceServers, importNative, keepalive, nativeIceHostsWarning, type TransportChoice } from './config.js';

export interface TransportOptions {
  /** Read on first use, so flag errors are reported before a missing token. */
  readonly token: () => string;
  readonly env: NodeJS.ProcessEnv;
  readonly iceServers?: readonly string[];
  /** native (default, node-datachannel) or werift, as `transportChoice()` resolved it. */
  readonly transport: TransportChoice;
  /** A line for the user that is not an error (e.g. native could not load, werift used instead). */
  readonly warn: (line: string) => void;
  /** Gateway key pinning / known_gateways (see adapters/known-gateways.ts). */
  readonly keys?: GatewayKeyCheck;
}

export function lazyTransport(options: TransportOptions): Transport {
  let loaded: Promise<Transport> | undefined;
  const load = () =>
    (loaded ??= (async () => {
      const settings = {
        token: options.token(),
        ice: { hosts: iceHosts(options.env), servers: iceServers(options.iceServers ?? [], options.env) },
        // One stderr line per connection the target refused: the client itself sees only a reset.
        mux: { ...keepalive(options.env), log: options.warn },
        ...(options.keys ? { keys: options.keys } : {}),
      };
      const native = await importNative(options.transport, () => import('../adapters/native-transport.js'), options.warn);
      if (native) {
        const warning = nativeIceHostsWarning(settings.ice.hosts);
        if (warning) options.warn(warning);
        return native.createNativeTransport(settings);
      }
      return (await import('../adapters/werift-transport.js')).createWeriftTransport(settings);
    })());
  return {
    async negotiate(request: NegotiateRequest): Promise<Negotiation> {
      return (await load()).negotiate(request);
    },
    async establish(negotiation: Negotiation, signal: AbortSignal): Promise<Link> {
      return (await load()).establish(negotiation, signal);
    },
  };
}

export async function createTunnelPorts(
  options: TransportOptions & { announce: TunnelPorts['announce']; registry?: Registry; signals?: Signals; ownerLogId?: string },
): Promise<TunnelPorts> {
  const opened = options.registry ?? (await openFsRegistry({ env: options.env }));
  // A background owner records where its log is, so `list --json` shows it as the launcher did.
  const logFile = options.ownerLogId === undefined ? undefined : join(logDir(opened.location), `${options.ownerLogId}.log`);
  const registry: Registry = logFile === undefined ? opened : { ...opened, put: (record) => opened.put({ ...record, logFile }) };
  return {
    listeners: createTcpListenerFactory(),
    transport: lazyTransport(options),
    registry,
    pidFiles: createPidFiles({ registry }),
    signals: options.signals ?? createProcessSignals(),
    runner: createShellRunner(),
    ownerPid: process.pid,
    announce: options.announce,
  };
}

/** In a background owner, the tunnel id its launcher chose; removed so nothing else inherits it. */
export function takeOwnerId(env: NodeJS.ProcessEnv): string | undefined {
  const id = env[ownerIdVariable];
  delete env[ownerIdVariable];
  return id && /^[0-9a-f]{8}$/.test(id) ? id : undefined;
}

export async function createLauncherPorts(options: { env: NodeJS.ProcessEnv; argv: readonly string[] }): Promise<{ owners: BackgroundOwners; signals: Signals }> {
  const registry = await openFsRegistry({ env: options.env });
  return { owners: createBackgroundOwners({ registry, argv: options.argv, env: options.env }), signals: createProcessSignals() };
}
