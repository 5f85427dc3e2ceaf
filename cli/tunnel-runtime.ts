// How `pam tunnel start` runs: real adapters behind the tunnel's ports, the printer, notifier, journal
// and inspector around the actor, and the hand-off to `pam shell`; or, with -bg, the launcher. The
// WebRTC transport is imported on first use, so commands and failures that never reach the gateway
// (usage errors, busy ports) don't pay werift's import cost.

import { randomBytes } from 'node:crypto';
import { type Actor, createActor, toPromise, waitFor } from 'xstate';
import { hostPort } from '../machines/address.js';
import type { Outcome } from '../machines/errors.js';
import { provideLauncher } from '../machines/launcher.actors.js';
import type { Link, Negotiation, NegotiateRequest, Transport } from '../machines/ports.js';
import { type StartFlags, socksTarget } from '../machines/start-flags.js';
import { provideTunnel, type TunnelPorts } from '../machines/tunnel.actors.js';
import { recordsOf } from '../machines/tunnel.machine.js';
import { journalRetention, openJournal } from '../adapters/fs-journal.js';
import { processStartTime } from '../adapters/process-identity.js';
import { createSystemdNotifier } from '../adapters/sd-notify.js';
import type { PamContext } from './context.js';
import { attachInspector, inspectUrl } from './inspector.js';
import { createTunnelPrinter } from './tunnel-output.js';
import { tunnelRow } from './registry-rows.js';
import { createProcessSignals } from '../adapters/posix-signals.js';
import { createShellRunner } from '../adapters/shell-runner.js';
import { createTcpListenerFactory } from '../adapters/tcp-listener.js';
import { openFsRegistry, type FsRegistry } from '../adapters/fs-registry.js';
import { openControlServer } from '../adapters/control-channel.js';
import { createPidFiles } from '../adapters/pid-files.js';
import { createBackgroundOwners, ownerIdVariable } from '../adapters/background-owner.js';
import { logDir } from '../adapters/fs-journal.js';
import { join } from 'node:path';
import type { BackgroundOwners, Registry, Signals } from '../machines/ports.js';
import {
  type ConfigFile,
  iceHosts,
  iceServers,
  importNative,
  keepalive,
  nativeIceHostsWarning,
  readCredentials,
  type TransportChoice,
  transportChoice,
  transportForTurn,
  gatewayKeyCheck,
  parallelConnections,
} from './config.js';
import type { GatewayKeyCheck } from '../adapters/known-gateways.js';
import type { Credentials } from '../adapters/user-key.js';

export interface TransportOptions {
  /** Read on first use, so flag errors are reported before missing credentials. */
  readonly credentials: () => Credentials;
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
        ...options.credentials(),
        ice: { hosts: iceHosts(options.env), servers: iceServers(options.iceServers ?? [], options.env) },
        // One stderr line per connection the target refused: the client itself sees only a reset.
        mux: { ...keepalive(options.env), log: options.warn },
        ...(options.keys ? { keys: options.keys } : {}),
      };
      const native = await importNative(options.transport, () => import('../adapters/native-transport.js'), options.warn);
      if (native) {
        const warning = nativeIceHostsWarning(settings.ice.hosts);
        if (warning) options.warn(warning);
        // Parallel connections on native only: werift's SCTP is JS, CPU-bound long before a window caps it.
        return native.createNativeTransport({ ...settings, parallel: parallelConnections(options.env) });
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

export async function createLauncherPorts(options: {
  env: NodeJS.ProcessEnv;
  argv: readonly string[];
}): Promise<{ owners: BackgroundOwners; signals: Signals }> {
  const registry = await openFsRegistry({ env: options.env });
  return { owners: createBackgroundOwners({ registry, argv: options.argv, env: options.env }), signals: createProcessSignals() };
}

export interface TunnelRunOptions {
  readonly flags: StartFlags;
  /** Set in a background owner: the id its launcher chose (the owner then writes JSON lines to its log). */
  readonly ownerId?: string;
  readonly json: boolean;
  readonly tokenFile: string | undefined;
  readonly keyFile: string | undefined;
  readonly file: ConfigFile;
  readonly iceServers: readonly string[];
  readonly transport: string | undefined;
  readonly inspect: string | boolean | undefined;
}

/**
 * Run one tunnel actor in this process and return its exit code. Inside `pam shell` (not --run) it
 * returns 0 once the tunnel is ready and leaves the tunnel to the session.
 */
export async function runTunnel(context: PamContext, options: TunnelRunOptions): Promise<number> {
  const flags = options.flags;
  const env = context.env;
  const id = options.ownerId ?? randomBytes(4).toString('hex');
  // A background owner writes JSON lines to its log, so the launcher can read why it stopped.
  const json = options.json || options.ownerId !== undefined;
  const runMode = flags.run !== undefined;
  const printer = createTunnelPrinter(context, {
    json,
    runMode,
    pid: process.pid,
    target: flags.socks ? 'the gateway (SOCKS)' : flags.target,
  });
  const notifier = createSystemdNotifier(env, printer.announce.problem);
  const announce: TunnelPorts['announce'] = {
    ...printer.announce,
    ready: (tunnel) => {
      printer.announce.ready(tunnel);
      void notifier.ready(`listening on ${hostPort(tunnel.listener?.host ?? '', tunnel.listener?.port ?? 0)} → ${tunnel.settings?.target}`);
    },
  };
  // Validated now: a bad URL is a usage error before anything starts.
  const warn = (line: string) => context.stderr.write(`pam: ${line}\n`);
  const transport = transportForTurn(transportChoice(options.transport, env), iceServers(options.iceServers, env), warn);
  const session = context.session;
  // A start with several targets (outside `pam shell`, not --run) answers `pam tunnel stop <id>` for
  // one of them through a control channel; the others keep the link.
  const several = (flags.targets?.length ?? 1) > 1;
  const ownRegistry = !session && several && !runMode ? await openFsRegistry({ env }) : undefined;
  const ports = await createTunnelPorts({
    ...(options.ownerId !== undefined ? { ownerLogId: options.ownerId } : {}),
    credentials: () => readCredentials({ tokenFile: options.tokenFile, keyFile: options.keyFile, env, file: options.file }),
    env,
    announce,
    iceServers: options.iceServers,
    transport,
    keys: gatewayKeyCheck(env, options.file),
    warn,
    ...(session ? { registry: session.registry, signals: session.signals } : {}),
    ...(ownRegistry ? { registry: ownRegistry } : {}),
  });

  const input = { id, flags, startedAt: new Date().toISOString(), interactive: context.interactive };
  const journal = openJournal({
    registryDir: ports.registry.location,
    meta: { id, pid: process.pid, startTime: (await processStartTime(process.pid)) ?? 'unknown', input },
    ...journalRetention(env),
    warn: printer.announce.problem,
  });
  const url = inspectUrl(options.inspect, env);
  const inspector = url ? await attachInspector(url, (line) => context.stderr.write(`pam: ${line}\n`)) : undefined;
  const actor = createActor(provideTunnel(ports), {
    input,
    inspect: (event) => {
      journal.inspect(event);
      inspector?.inspect(event);
    },
  });
  const control = ownRegistry ? await openTargetControl(ownRegistry, actor) : undefined;
  const settle: Promise<Outcome> = toPromise(actor).then(async (outcome) => {
    await control?.close();
    inspector?.stop();
    printer.stopped(id, outcome);
    return outcome;
  });
  actor.start();
  actor.send({ type: 'tunnel.start' });
  if (session && !runMode) {
    // In `pam shell` the tunnel lives on in the session: back to the prompt once it is ready.
    const reached = await waitFor(actor, (snapshot) => snapshot.matches('ready') || snapshot.status === 'done');
    if (reached.matches('ready')) {
      if (!several) {
        session.adopt({
          id,
          target: flags.socks ? socksTarget : flags.target,
          stop: (origin) => actor.send({ type: 'tunnel.stop', signal: 'SIGTERM', origin }),
          finished: settle,
        });
        return 0;
      }
      // Several targets: each id is the session's to stop on its own; the last one ends the tunnel.
      for (const record of recordsOf(reached.context, 'ready')) {
        session.adopt({
          id: record.id,
          target: record.target,
          stop: () => actor.send({ type: 'tunnel.stopTarget', id: record.id }),
          finished: settle,
        });
      }
      return 0;
    }
  }
  return (await settle).exitCode;
}

/** The owner's control channel for a tunnel with several targets: `pam tunnel stop <id>` stops one target. */
async function openTargetControl(registry: FsRegistry, actor: Actor<ReturnType<typeof provideTunnel>>) {
  const socketPath = join(registry.location, `${process.pid}.sock`);
  const server = await openControlServer(socketPath, (target) => {
    const snapshot = actor.getSnapshot();
    if (snapshot.status !== 'active' || !recordsOf(snapshot.context, 'ready').some((record) => record.id === target)) return false;
    actor.send({ type: 'tunnel.stopTarget', id: target });
    return true;
  });
  await registry.setControl(socketPath);
  return {
    async close() {
      await server.close();
      await registry.setControl(undefined).catch(() => undefined);
    },
  };
}

/** `-bg`: spawn the detached owner through the launcher machine; print where the tunnel is once it is ready. */
export async function launchInBackground(context: PamContext, options: { flags: StartFlags; json: boolean }): Promise<number> {
  const id = randomBytes(4).toString('hex');
  const ports = await createLauncherPorts({ env: context.env, argv: process.argv.slice(1) });
  const actor = createActor(provideLauncher(ports), { input: { id, flags: options.flags } });
  const finished = toPromise(actor);
  actor.start();
  actor.send({ type: 'launch.start' });
  const outcome = await finished;
  if (outcome.ready && outcome.owner) {
    const { owner } = outcome;
    // Several targets: the owner wrote the others' records before the first one's (the one watched).
    const others =
      (options.flags.targets?.length ?? 1) > 1
        ? (await openFsRegistry({ env: context.env }))
            .entries()
            .then(
              (entries) =>
                entries.find((entry) => entry.pid === owner.pid)?.tunnels.filter((record) => record.id !== outcome.ready!.id) ?? [],
            )
        : Promise.resolve([]);
    for (const ready of [outcome.ready, ...(await others)]) {
      context.stdout.write(
        options.json
          ? // The very row `pam tunnel list --json` shows for this tunnel.
            `${JSON.stringify(tunnelRow({ pid: owner.pid }, { ...ready, logFile: ready.logFile ?? owner.logFile }, Date.now()))}\n`
          : `pam: tunnel ${ready.id} ready on ${hostPort(ready.host, ready.port)} → ${ready.target === socksTarget ? 'SOCKS5 proxy' : ready.target} (pid ${owner.pid}, log ${owner.logFile}); ` +
              `stop it with \`pam tunnel stop ${ready.id}\`\n`,
      );
    }
  } else {
    // With --json, failure is one JSON object on stdout too, shaped like the foreground `stopped` event.
    if (options.json) {
      context.stdout.write(
        `${JSON.stringify({ event: 'stopped', id, exitCode: outcome.exitCode, kind: outcome.kind, reason: outcome.reason, logFile: outcome.owner?.logFile ?? null })}\n`,
      );
    }
    context.stderr.write(`pam: ${outcome.reason}\n`);
  }
  return outcome.exitCode;
}
