// Turns port implementations into the tunnel machine's named actors and actions. The CLI passes real
// adapters, the tests pass fakes: both go through this one wiring, so tests exercise what ships.

import { fromCallback, fromPromise } from 'xstate';
import { hostPort } from './address.js';
import { TunnelError } from './errors.js';
import type { CommandRunner, ListenerFactory, PidFiles, Registry, Signals, Transport } from './ports.js';
import type { CommandControlEvent, TunnelEvent } from './tunnel.events.js';
import {
  recordOf,
  tunnelMachine,
  type ClaimInput,
  type NegotiateInput,
  type PublishInput,
  type ReconnectInput,
  type RunInput,
  type ServeInput,
  type TeardownInput,
  type TunnelContext,
} from './tunnel.machine.js';
import type { Link, LocalListener, Negotiation } from './ports.js';

export interface TunnelPorts {
  readonly listeners: ListenerFactory;
  readonly transport: Transport;
  readonly registry: Registry;
  readonly pidFiles: PidFiles;
  readonly signals: Signals;
  readonly runner: CommandRunner;
  /** The pid that owns the tunnel (written to the pid file). */
  readonly ownerPid: number;
  /** Presentation hooks: the CLI prints, tests record. */
  readonly announce: {
    ready(context: TunnelContext): void;
    skipped(context: TunnelContext): void;
    /** A side effect failed where nobody awaits it (a registry write from an action). */
    problem(message: string): void;
  };
}

export function provideTunnel(ports: TunnelPorts) {
  return tunnelMachine.provide({
    actors: {
      claimLocal: fromPromise<LocalListener, ClaimInput>(async ({ input }) => {
        if (input.pidFile !== undefined) await ports.pidFiles.check(input.pidFile);
        if (input.port !== 0) await refuseRegisteredPort(ports.registry, input.host, input.port);
        return ports.listeners.bind(input.host, input.port);
      }),
      negotiate: fromPromise<Negotiation, NegotiateInput>(({ input, signal }) => ports.transport.negotiate({ ...input, signal })),
      establish: fromPromise<Link, Negotiation>(({ input, signal }) => ports.transport.establish(input, signal)),
      publish: fromPromise<void, PublishInput>(async ({ input }) => {
        if (input.pidFile !== undefined) await ports.pidFiles.write(input.pidFile, ports.ownerPid);
        await ports.registry.put(input.record);
      }),
      serveConnections: fromCallback<TunnelEvent, ServeInput>(({ input, sendBack }) => {
        let serving = true;
        input.link.onLost((reason, ending) => {
          if (serving) sendBack({ type: ending === 'revoked' ? 'link.revoked' : 'link.lost', reason });
        });
        input.listener.accept((connection) => input.link.carry(connection));
        // Leaving `linked` (reconnecting, stopping): new connections wait for the next link.
        return () => {
          serving = false;
          input.listener.accept(undefined);
        };
      }),
      reconnect: fromPromise<Link, ReconnectInput>(async ({ input, signal }) => {
        await input.lost?.close().catch(() => undefined);
        const { lost: _lost, ...request } = input;
        const negotiation = await ports.transport.negotiate({ ...request, signal });
        try {
          return await ports.transport.establish(negotiation, signal);
        } catch (error) {
          await negotiation.close().catch(() => undefined);
          throw error;
        }
      }),
      runCommand: fromCallback<CommandControlEvent, RunInput>(({ input, sendBack, receive }) => {
        const running = ports.runner.run(input.command, input.env);
        void running.exited.then((exit) => sendBack({ type: 'command.exited', exit }));
        receive((event) => running.kill(event.signal));
        // Leaving runningCommand (the command exited, or a second signal cut the wait short): nothing
        // of the command may outlive the tunnel, not even what it left running in the background.
        return () => running.end();
      }),
      watchSignals: fromCallback<TunnelEvent>(({ sendBack }) => ports.signals.watch((signal) => sendBack({ type: 'tunnel.stop', signal }))),
      teardown: fromPromise<void, TeardownInput>(({ input }) => teardown(ports, input)),
    },
    actions: {
      reportState: ({ context }, params) => {
        const record = recordOf(context, params.state);
        if (!record) return;
        ports.registry
          .put(record)
          .catch((error: unknown) =>
            ports.announce.problem(`registry update failed: ${error instanceof Error ? error.message : String(error)}`),
          );
      },
      // After the macrostep: the journal (written when the snapshot is emitted) then already says
      // `ready` by the time anyone can see the ready line and act on it (e.g. kill -9 the owner).
      announceReady: ({ context }) => queueMicrotask(() => ports.announce.ready(context)),
      announceLink: (_, params) => ports.announce.problem(params.message),
      announceSkipped: ({ context }) => {
        if (context.settings?.skipped) ports.announce.skipped(context);
      },
    },
  });
}

async function refuseRegisteredPort(registry: Registry, host: string, port: number): Promise<void> {
  for (const entry of await registry.entries()) {
    const holder = entry.tunnels.find((tunnel) => tunnel.port === port && tunnel.host === host);
    if (holder) {
      throw new TunnelError(
        'portBusy',
        `local port ${hostPort(host, port)} is held by tunnel ${holder.id} (target ${holder.target}, pid ${entry.pid}); ` +
          `pick another --port or stop it with \`pam tunnel stop ${holder.id}\``,
      );
    }
  }
}

/** Release everything, in order, even when one step fails; report the first failure at the end. */
async function teardown(ports: TunnelPorts, input: TeardownInput): Promise<void> {
  const steps: Array<() => Promise<void> | undefined> = [
    () => input.link?.close(),
    () => (input.link ? undefined : input.negotiation?.close()),
    () => input.listener?.close(),
    () => (input.pidFile !== undefined ? ports.pidFiles.remove(input.pidFile, ports.ownerPid) : undefined),
    () => ports.registry.remove(input.id),
  ];
  let firstError: unknown;
  for (const step of steps) {
    try {
      await step();
    } catch (error) {
      firstError ??= error;
    }
  }
  if (firstError !== undefined) throw firstError;
}
