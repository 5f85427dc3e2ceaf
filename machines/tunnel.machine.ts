// The lifecycle of one tunnel: idle → connecting → ready (→ runningCommand) → stopping → stopped.
// Pure XState: every side effect is a named actor or action whose default throws until provided.

import { assign, fromCallback, fromPromise, raise, sendTo, setup } from 'xstate';
import { type Failure, failure, failureOf, signalExitCode, type Outcome, type StopSignal } from './errors.js';
import type { CommandExit, Link, LocalListener, Negotiation, RegistryState, TunnelRecord } from './ports.js';
import { parseStartFlags, type StartFlags, type StartSettings } from './start-flags.js';
import type { CommandControlEvent, TunnelEvent } from './tunnel.events.js';
import { firstOutcome, notProvided } from './provided.js';
import { hostPort } from './address.js';

export interface TunnelInput {
  readonly id: string;
  readonly flags: StartFlags;
  /** ISO time the caller started the tunnel (the machine reads no clock). */
  readonly startedAt: string;
  /** Is a terminal attached? Then Ctrl+C already reaches a --run command (same process group). */
  readonly interactive: boolean;
}

export type ConnectStage = 'claiming the local port' | 'signalling' | 'ICE/DTLS' | 'publishing';

export interface TunnelContext {
  readonly id: string;
  readonly flags: StartFlags;
  readonly startedAt: string;
  readonly interactive: boolean;
  /** The flags, parsed once from the input: settings when valid, else why not (the tunnel ends with it). */
  readonly settings?: StartSettings;
  readonly flagError?: Failure;
  readonly stage?: ConnectStage;
  readonly listener?: LocalListener;
  readonly negotiation?: Negotiation;
  readonly link?: Link;
  /** How the tunnel ends: set once by the first decisive event, then kept. */
  readonly exit?: Outcome;
  /** Exit code of the wrapped command, once it has exited. */
  readonly commandExit?: CommandExit;
  /** The stop signal already passed on to the wrapped command: a second one stops waiting for it. */
  readonly commandSignalled?: StopSignal;
  /** Successful reconnects so far (shown by `list`). */
  readonly reconnects?: number;
  /** Failed attempts in the current reconnect. */
  readonly reconnectAttempt?: number;
  /** Why the link was lost, for the final reason if reconnecting fails. */
  readonly lostReason?: string;
}

export type TunnelOutput = Outcome;

export interface ClaimInput {
  readonly host: string;
  readonly port: number;
  readonly pidFile?: string;
}
export interface NegotiateInput {
  readonly gateway: string;
  readonly target: string;
  readonly reason?: string;
  readonly ticket?: string;
}
export interface PublishInput {
  readonly record: TunnelRecord;
  readonly pidFile?: string;
}
export interface ServeInput {
  readonly listener: LocalListener;
  readonly link: Link;
}
export interface ReconnectInput extends NegotiateInput {
  readonly lost?: Link;
}
export interface RunInput {
  readonly command: string;
  readonly env: Readonly<Record<string, string>>;
}
export interface TeardownInput {
  readonly id: string;
  readonly listener?: LocalListener;
  readonly negotiation?: Negotiation;
  readonly link?: Link;
  readonly pidFile?: string;
}

/** The registry's view of a tunnel, derived from context. */
export function recordOf(context: TunnelContext, state: RegistryState): TunnelRecord | undefined {
  const settings = context.settings;
  if (!settings) return undefined;
  return {
    id: context.id,
    target: settings.target,
    gateway: settings.gateway,
    host: context.listener?.host ?? settings.host,
    port: context.listener?.port ?? settings.port,
    mode: settings.mode,
    state,
    reconnects: context.reconnects ?? 0,
    ...pathOf(context),
    startedAt: context.startedAt,
    ...(settings.pidFile !== undefined ? { pidFile: settings.pidFile } : {}),
  };
}

function pathOf(context: TunnelContext): { path?: 'direct' | 'relay' } {
  const kind = context.link?.path?.()?.kind;
  return kind ? { path: kind } : {};
}

function stoppedBy(event: { signal: StopSignal; origin?: string }): string {
  return `stopped by ${event.signal}${event.origin ? ` from ${event.origin}` : ''}`;
}

/** Failures that are the gateway's verdict on who asks: retrying the same request gets the same answer. */
const refusalKinds: ReadonlySet<string> = new Set(['authRefused', 'accessRefused', 'accessRevoked', 'gatewayKeyMismatch']);

const tunnelSetup = setup({
  types: {
    context: {} as TunnelContext,
    events: {} as TunnelEvent,
    input: {} as TunnelInput,
    output: {} as TunnelOutput,
  },
  actors: {
    /** Check the pid file and bind the local listener (exit 75 before any gateway contact). */
    claimLocal: fromPromise<LocalListener, ClaimInput>(notProvided('claimLocal actor')),
    /** Signalling: offer → gateway → answer. */
    negotiate: fromPromise<Negotiation, NegotiateInput>(notProvided('negotiate actor')),
    /** ICE + DTLS + data channel open. */
    establish: fromPromise<Link, Negotiation>(notProvided('establish actor')),
    /** Write the pid file and the registry record in state ready. */
    publish: fromPromise<void, PublishInput>(notProvided('publish actor')),
    /** After the link was lost: close it, then signalling + ICE/DTLS again; resolves with the new link. */
    reconnect: fromPromise<Link, ReconnectInput>(notProvided('reconnect actor')),
    /** Carry local connections over the link; reports `link.lost`. */
    serveConnections: fromCallback<TunnelEvent, ServeInput>(notProvided('serveConnections actor')),
    /** The --run command; reports `command.exited`, accepts `command.signal`. */
    runCommand: fromCallback<CommandControlEvent, RunInput>(notProvided('runCommand actor')),
    /** SIGINT/SIGTERM/SIGHUP → `tunnel.stop`. */
    watchSignals: fromCallback<TunnelEvent>(notProvided('watchSignals actor')),
    /** Close link, listener, pid file and registry record; must not throw for what is already gone. */
    teardown: fromPromise<void, TeardownInput>(notProvided('teardown actor')),
  },
  actions: {
    /** Keep the first decisive outcome: later events (a second signal, teardown noise) don't rewrite why it ended. */
    recordOutcome: assign(({ context }, outcome: Outcome) => firstOutcome(context, outcome)),
    /** An invoked actor failed: its error, as a failure kind, is the outcome (unless one was recorded). */
    recordError: assign(({ context, event }) => ('error' in event ? firstOutcome(context, failureOf(event.error)) : {})),
    /** The link died: remember why, for the final reason if reconnecting fails; attempts start again. */
    recordLinkLost: assign((_, params: { reason: string }) => ({ lostReason: params.reason, reconnectAttempt: 0 })),
    countReconnectAttempt: assign({ reconnectAttempt: ({ context }) => (context.reconnectAttempt ?? 0) + 1 }),
    recordReconnected: assign(({ context }, params: { link: Link }) => ({
      link: params.link,
      reconnects: (context.reconnects ?? 0) + 1,
      reconnectAttempt: 0,
    })),
    /** Mirror the lifecycle into the registry (fire and forget; the adapter serialises writes). */
    reportState: notProvided<[{ context: TunnelContext }, { state: RegistryState }]>('reportState action'),
    /** Tell the operator (and a supervisor) that the port is usable. */
    announceReady: notProvided<[{ context: TunnelContext }]>('announceReady action'),
    /** Tell the operator about a skipped flag (inside `pam shell`). */
    announceSkipped: notProvided<[{ context: TunnelContext }]>('announceSkipped action'),
    /** Tell the operator the link was lost and is being re-established, or is back. */
    announceLink: notProvided<[{ context: TunnelContext }, { message: string }]>('announceLink action'),
  },
  guards: {
    hasUsageError: ({ context }) => context.flagError !== undefined,
    isRunMode: ({ context }) => context.settings?.mode === 'run',
    /** Ctrl+C on a terminal already reached the command through the process group: don't signal twice. */
    isTerminalInterrupt: ({ context, event }) => context.interactive && event.type === 'tunnel.stop' && event.signal === 'SIGINT',
    /** A stop signal already went to the wrapped command. */
    isCommandSignalled: ({ context }) => context.commandSignalled !== undefined,
    /** --reconnect-attempts is not 0. */
    mayReconnect: ({ context }) => (context.settings?.reconnectAttempts ?? 0) > 0,
    /** A reconnect was refused by the gateway (credentials or access), not merely failed. */
    isRefusal: ({ event }) => 'error' in event && refusalKinds.has(failureOf(event.error).kind),
    hasAttemptsLeft: ({ context }) => (context.reconnectAttempt ?? 0) + 1 < (context.settings?.reconnectAttempts ?? 0),
  },
  delays: {
    connectTimeout: ({ context }) => context.settings?.timeoutMs ?? 30_000,
    /** 1 s, 2 s, 4 s … capped at 30 s between reconnect attempts. */
    reconnectBackoff: ({ context }) => Math.min(1_000 * 2 ** (context.reconnectAttempt ?? 0), 30_000),
  },
});

/**
 * The link's life inside a ready state (serving or runningCommand, which keep running meanwhile):
 * linked → lost → reconnecting with backoff, at most --reconnect-attempts times → linked again, or gone
 * (the parent decides what "gone" means). `parent` is the owning state's id, for absolute targets.
 * Built by a function because both ready states embed it; typed by the machine's own setup().
 */
function linkStates(parent: 'tunnel.ready.serving' | 'tunnel.ready.runningCommand') {
  const gone = `#${parent}.gone` as const;
  return tunnelSetup.createStateConfig({
    initial: 'linked',
    states: {
      linked: {
        description: 'The link to the gateway is up; local connections are carried over it',
        invoke: {
          id: 'serve',
          src: 'serveConnections',
          input: ({ context }) => ({ listener: context.listener!, link: context.link! }),
        },
        on: {
          'link.lost': [
            {
              guard: 'mayReconnect',
              target: 'reconnecting',
              actions: [
                { type: 'recordLinkLost', params: ({ event }) => ({ reason: event.reason }) },
                { type: 'announceLink', params: ({ event }) => ({ message: `tunnel lost (${event.reason}); reconnecting` }) },
              ],
            },
            {
              target: 'gone',
              actions: [
                { type: 'recordOutcome', params: ({ event }) => failure('gatewayUnreachable', `tunnel lost: ${event.reason}`) },
                raise({ type: 'link.gone' }),
              ],
            },
          ],
          // The gateway withdrew access: a reconnect would be refused, so the link is gone for good.
          'link.revoked': {
            target: 'gone',
            actions: [
              { type: 'recordOutcome', params: ({ event }) => failure('accessRevoked', event.reason) },
              raise({ type: 'link.gone' }),
            ],
          },
        },
      },
      reconnecting: {
        description: 'Link lost: new connections wait (bounded) while signalling and ICE/DTLS run again, with backoff',
        entry: { type: 'reportState', params: { state: 'reconnecting' } },
        initial: 'waiting',
        states: {
          waiting: {
            description: 'Backing off before the next attempt (1 s, 2 s, 4 s … at most 30 s)',
            after: { reconnectBackoff: { target: 'attempting' } },
          },
          attempting: {
            description: 'One reconnect attempt, bounded by --timeout',
            invoke: {
              id: 'reconnect',
              src: 'reconnect',
              input: ({ context }) => ({ ...negotiateInput(context), ...(context.link ? { lost: context.link } : {}) }),
              onDone: {
                target: `#${parent}.linked`,
                actions: [
                  { type: 'recordReconnected', params: ({ event }) => ({ link: event.output }) },
                  { type: 'reportState', params: { state: 'ready' } },
                  { type: 'announceLink', params: { message: 'reconnected' } },
                ],
              },
              onError: [
                // The gateway answered and said no (access revoked meanwhile, token changed): asking again cannot help.
                {
                  guard: 'isRefusal',
                  target: gone,
                  actions: [{ type: 'recordOutcome', params: ({ event }) => failureOf(event.error) }, raise({ type: 'link.gone' })],
                },
                { guard: 'hasAttemptsLeft', target: 'waiting', actions: 'countReconnectAttempt' },
                {
                  target: gone,
                  actions: [
                    { type: 'recordOutcome', params: ({ context, event }) => lostForGood(context, failureOf(event.error).reason) },
                    raise({ type: 'link.gone' }),
                  ],
                },
              ],
            },
            after: {
              connectTimeout: [
                { guard: 'hasAttemptsLeft', target: 'waiting', actions: 'countReconnectAttempt' },
                {
                  target: gone,
                  actions: [
                    { type: 'recordOutcome', params: ({ context }) => lostForGood(context, 'attempt timed out') },
                    raise({ type: 'link.gone' }),
                  ],
                },
              ],
            },
          },
        },
      },
      gone: { description: 'The link is lost for good; the outcome says why' },
    },
  });
}

/** What signalling sends: where to, and the operator's --reason / --ticket. */
function negotiateInput(context: TunnelContext): NegotiateInput {
  const settings = context.settings!;
  return {
    gateway: settings.gateway,
    target: settings.target,
    ...(settings.reason !== undefined ? { reason: settings.reason } : {}),
    ...(settings.ticket !== undefined ? { ticket: settings.ticket } : {}),
  };
}

function lostForGood(context: TunnelContext, detail: string): Failure {
  return failure(
    'gatewayUnreachable',
    `tunnel lost (${context.lostReason}); ${context.settings?.reconnectAttempts} reconnect attempt(s) failed, last: ${detail}`,
  );
}

export const tunnelMachine = tunnelSetup.createMachine({
  id: 'tunnel',
  description: 'One pam tunnel: a local TCP port carried over WebRTC to a named gateway target',
  context: ({ input }) => {
    const parsed = parseStartFlags(input.flags);
    return {
      id: input.id,
      flags: input.flags,
      startedAt: input.startedAt,
      interactive: input.interactive,
      ...(parsed.ok ? { settings: parsed.settings } : { flagError: parsed.failure }),
    };
  },
  invoke: { id: 'signals', src: 'watchSignals' },
  initial: 'idle',
  states: {
    idle: {
      description: 'Created with its flags parsed; a usage error ends it here, before anything is touched',
      on: {
        'tunnel.start': [
          { guard: 'hasUsageError', target: 'stopped', actions: { type: 'recordOutcome', params: ({ context }) => context.flagError! } },
          { target: 'connecting' },
        ],
        'tunnel.stop': {
          target: 'stopped',
          actions: {
            type: 'recordOutcome',
            params: ({ event }) => ({ kind: 'signal', exitCode: signalExitCode(event.signal), reason: `${stoppedBy(event)} before start` }),
          },
        },
      },
    },
    connecting: {
      description: 'Bringing the tunnel up: local port, signalling, ICE/DTLS, data channel; bounded by --timeout',
      entry: { type: 'announceSkipped' },
      after: {
        connectTimeout: {
          target: 'stopping',
          actions: { type: 'recordOutcome', params: failure('connectTimeout', 'not connected') },
        },
      },
      on: {
        'tunnel.stop': {
          target: 'stopping',
          actions: {
            type: 'recordOutcome',
            params: ({ context, event }) => ({
              kind: 'signal',
              exitCode: signalExitCode(event.signal),
              reason: `${stoppedBy(event)} while ${context.stage ?? 'connecting'}`,
            }),
          },
        },
      },
      initial: 'claiming',
      states: {
        claiming: {
          description: 'Checking the pid file and binding the local port (before any gateway contact)',
          entry: assign({ stage: 'claiming the local port' as const }),
          invoke: {
            id: 'claim',
            src: 'claimLocal',
            input: ({ context }) => ({
              host: context.settings!.host,
              port: context.settings!.port,
              ...(context.settings!.pidFile !== undefined ? { pidFile: context.settings!.pidFile } : {}),
            }),
            onDone: { target: 'negotiating', actions: assign({ listener: ({ event }) => event.output }) },
            onError: { target: '#tunnel.stopping', actions: 'recordError' },
          },
        },
        negotiating: {
          description: 'Exchanging offer and answer with the gateway',
          entry: [assign({ stage: 'signalling' as const }), { type: 'reportState', params: { state: 'connecting' } }],
          invoke: {
            id: 'negotiate',
            src: 'negotiate',
            input: ({ context }) => negotiateInput(context),
            onDone: { target: 'establishing', actions: assign({ negotiation: ({ event }) => event.output }) },
            onError: { target: '#tunnel.stopping', actions: 'recordError' },
          },
        },
        establishing: {
          description: 'Waiting for ICE, DTLS and the data channel to open',
          entry: assign({ stage: 'ICE/DTLS' as const }),
          invoke: {
            id: 'establish',
            src: 'establish',
            input: ({ context }) => context.negotiation!,
            onDone: { target: 'publishing', actions: assign({ link: ({ event }) => event.output }) },
            onError: { target: '#tunnel.stopping', actions: 'recordError' },
          },
        },
        publishing: {
          description: 'Writing the pid file and the registry record (state ready)',
          entry: assign({ stage: 'publishing' as const }),
          invoke: {
            id: 'publish',
            src: 'publish',
            input: ({ context }) => ({
              record: recordOf(context, 'ready')!,
              ...(context.settings!.pidFile !== undefined ? { pidFile: context.settings!.pidFile } : {}),
            }),
            onDone: { target: '#tunnel.ready' },
            onError: { target: '#tunnel.stopping', actions: 'recordError' },
          },
        },
      },
    },
    ready: {
      description: 'The local port is usable and carries connections to the target',
      entry: { type: 'announceReady' },
      initial: 'entering',
      states: {
        entering: {
          description: 'Choosing between serving until stopped and running the --run command',
          always: [{ guard: 'isRunMode', target: 'runningCommand' }, { target: 'serving' }],
        },
        serving: {
          description: 'Serving until a signal or `pam tunnel stop` (foreground, background, shell)',
          on: {
            'tunnel.stop': {
              target: '#tunnel.stopping',
              actions: { type: 'recordOutcome', params: ({ event }) => ({ kind: 'ok', exitCode: 0, reason: stoppedBy(event) }) },
            },
            'link.gone': { target: '#tunnel.stopping' },
          },
          ...linkStates('tunnel.ready.serving'),
        },
        runningCommand: {
          description: 'Running the --run command through the tunnel; its exit code becomes ours',
          invoke: {
            id: 'command',
            src: 'runCommand',
            input: ({ context }) => ({
              command: context.settings!.command!,
              env: {
                PAM_TUNNEL_HOST: context.listener!.host,
                PAM_TUNNEL_PORT: String(context.listener!.port),
                PAM_TUNNEL_ID: context.id,
                // curl, git, pip and most HTTP clients read it; socks5h: names are resolved by the gateway.
                ...(context.settings!.socks ? { ALL_PROXY: `socks5h://${hostPort(context.listener!.host, context.listener!.port)}` } : {}),
              },
            }),
          },
          on: {
            'command.exited': {
              target: '#tunnel.stopping',
              actions: [
                assign({ commandExit: ({ event }) => event.exit }),
                {
                  type: 'recordOutcome',
                  params: ({ event }) => ({
                    kind: 'command',
                    exitCode: event.exit.exitCode,
                    reason: `wrapped command ${event.exit.signal ? `killed by ${event.exit.signal}` : `exited ${event.exit.exitCode}`}`,
                  }),
                },
              ],
            },
            'tunnel.stop': [
              // A second signal: the command ignored the first. Leaving this state SIGKILLs its process
              // group (the runCommand actor's cleanup), then teardown runs, and pam exits 128+N.
              {
                guard: 'isCommandSignalled',
                target: '#tunnel.stopping',
                actions: {
                  type: 'recordOutcome',
                  params: ({ context, event }) => ({
                    kind: 'signal',
                    exitCode: signalExitCode(event.signal),
                    reason: `wrapped command still running after ${context.commandSignalled}; killed (SIGKILL) on a second signal, ${event.signal}`,
                  }),
                },
              },
              { guard: 'isTerminalInterrupt', actions: assign({ commandSignalled: ({ event }) => event.signal }) },
              {
                actions: [
                  assign({ commandSignalled: ({ event }) => event.signal }),
                  sendTo('command', ({ event }): CommandControlEvent => ({ type: 'command.signal', signal: event.signal })),
                ],
              },
            ],
            // Lost for good (the outcome is recorded): the command gets SIGTERM; its exit ends the tunnel.
            'link.gone': { actions: sendTo('command', { type: 'command.signal', signal: 'SIGTERM' } satisfies CommandControlEvent) },
          },
          ...linkStates('tunnel.ready.runningCommand'),
        },
      },
    },
    stopping: {
      description: 'Closing the link and the local port, removing the pid file and the registry record',
      entry: { type: 'reportState', params: { state: 'stopping' } },
      invoke: {
        id: 'teardown',
        src: 'teardown',
        input: ({ context }) => ({
          id: context.id,
          ...(context.listener ? { listener: context.listener } : {}),
          ...(context.negotiation ? { negotiation: context.negotiation } : {}),
          ...(context.link ? { link: context.link } : {}),
          ...(context.settings?.pidFile !== undefined ? { pidFile: context.settings.pidFile } : {}),
        }),
        onDone: { target: 'stopped' },
        onError: { target: 'stopped', actions: 'recordError' },
      },
      on: {
        'tunnel.stop': {
          target: 'stopped',
          actions: assign({
            exit: ({ context, event }): Outcome => ({
              kind: context.exit && context.exit.exitCode !== 0 ? context.exit.kind : 'signal',
              exitCode: context.exit && context.exit.exitCode !== 0 ? context.exit.exitCode : signalExitCode(event.signal),
              reason: `${context.exit?.reason ?? 'stopping'}; teardown cut short by a second ${event.signal}`,
            }),
          }),
        },
      },
    },
    stopped: {
      description: 'Everything released; the output says how it ended',
      type: 'final',
    },
  },
  output: ({ context }) => outputOf(context),
});

export function outputOf(context: TunnelContext): TunnelOutput {
  const exit = context.exit ?? failure('internal', 'stopped without a recorded outcome');
  if (exit.kind !== 'connectTimeout') return exit;
  const reason = `connect timeout after ${formatSeconds(context.settings?.timeoutMs ?? 0)} in ${context.stage ?? 'connecting'}: raise --timeout, or check that the gateway answers`;
  return { ...exit, reason };
}

function formatSeconds(ms: number): string {
  return `${Number((ms / 1000).toFixed(3))} s`;
}

export type TunnelMachine = typeof tunnelMachine;
