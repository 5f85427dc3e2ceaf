// The parent side of `pam tunnel start --background`: spawn a detached owner, return only once the
// registry shows its tunnel ready; otherwise report the owner's own exit code and reason, and make sure
// no owner is left running. The owner itself runs the tunnel machine in mode 'background'.

import { assign, fromCallback, fromPromise, setup } from 'xstate';
import { type Failure, failure, failureOf, signalExitCode, type Outcome, type StopSignal } from './errors.js';
import type { Owner, TunnelRecord } from './ports.js';
import { parseStartFlags, type StartFlags } from './start-flags.js';
import { firstOutcome, notProvided } from './provided.js';

export interface LauncherInput {
  readonly id: string;
  readonly flags: StartFlags;
}

export type LauncherEvent =
  | { type: 'launch.start' }
  | { type: 'owner.ready'; record: TunnelRecord }
  | { type: 'owner.exited'; outcome: Outcome }
  | { type: 'tunnel.stop'; signal: StopSignal };

export interface LauncherContext {
  readonly id: string;
  readonly flags: StartFlags;
  /** From the flags, parsed once from the input (0 when they are invalid: the launcher ends at once). */
  readonly timeoutMs: number;
  /** Why the flags are invalid, if they are. */
  readonly flagError?: Failure;
  readonly owner?: Owner;
  readonly ready?: TunnelRecord;
  readonly exit?: Outcome;
}

export interface LauncherOutput extends Outcome {
  readonly owner?: Owner;
  readonly ready?: TunnelRecord;
}

/** Time the owner gets beyond its own --timeout to report before the parent gives up on it. */
export const ownerGraceMs = 5_000;

export const launcherMachine = setup({
  types: {
    context: {} as LauncherContext,
    events: {} as LauncherEvent,
    input: {} as LauncherInput,
    output: {} as LauncherOutput,
  },
  actors: {
    /** Spawn the detached owner (new session, stdio to a log file). */
    spawnOwner: fromPromise<Owner, LauncherInput>(notProvided('spawnOwner actor')),
    /** Report `owner.ready` when the registry shows the tunnel ready, `owner.exited` when the owner ends. */
    watchOwner: fromCallback<LauncherEvent, { id: string; owner: Owner }>(notProvided('watchOwner actor')),
    /** Make sure the owner is gone (SIGTERM, then SIGKILL) and nothing of it is left registered. */
    abandonOwner: fromPromise<void, { id: string; owner: Owner }>(notProvided('abandonOwner actor')),
    /** SIGINT/SIGTERM/SIGHUP → `tunnel.stop`. */
    watchSignals: fromCallback<LauncherEvent>(notProvided('watchSignals actor')),
  },
  actions: {
    recordOutcome: assign(({ context }, outcome: Outcome) => firstOutcome(context, outcome)),
  },
  guards: {
    hasUsageError: ({ context }) => context.flagError !== undefined,
  },
  delays: {
    ownerDeadline: ({ context }) => context.timeoutMs + ownerGraceMs,
  },
}).createMachine({
  id: 'launcher',
  description: 'Parent of a --background tunnel: returns once the detached owner is ready',
  context: ({ input }) => {
    const parsed = parseStartFlags(input.flags);
    return {
      id: input.id,
      flags: input.flags,
      ...(parsed.ok ? { timeoutMs: parsed.settings.timeoutMs } : { timeoutMs: 0, flagError: parsed.failure }),
    };
  },
  invoke: { id: 'signals', src: 'watchSignals' },
  initial: 'idle',
  states: {
    idle: {
      description: 'Created with its flags parsed; a usage error ends it here, before any owner is spawned',
      on: {
        'launch.start': [
          { guard: 'hasUsageError', target: 'done', actions: { type: 'recordOutcome', params: ({ context }) => context.flagError! } },
          { target: 'spawning' },
        ],
      },
    },
    spawning: {
      description: 'Starting the detached owner process',
      invoke: {
        id: 'spawn',
        src: 'spawnOwner',
        input: ({ context }) => ({ id: context.id, flags: context.flags }),
        onDone: { target: 'waiting', actions: assign({ owner: ({ event }) => event.output }) },
        onError: { target: 'done', actions: { type: 'recordOutcome', params: ({ event }) => failureOf(event.error) } },
      },
    },
    waiting: {
      description: 'Watching the registry for the owner to report the tunnel ready',
      invoke: { id: 'watch', src: 'watchOwner', input: ({ context }) => ({ id: context.id, owner: context.owner! }) },
      after: {
        ownerDeadline: {
          target: 'abandoning',
          actions: {
            type: 'recordOutcome',
            params: ({ context }) =>
              failure('connectTimeout', `the background owner (pid ${context.owner?.pid}) did not report ready in time`),
          },
        },
      },
      on: {
        'owner.ready': {
          target: 'done',
          actions: [
            assign({ ready: ({ event }) => event.record }),
            { type: 'recordOutcome', params: { kind: 'ok', exitCode: 0, reason: 'ready' } },
          ],
        },
        'owner.exited': { target: 'abandoning', actions: { type: 'recordOutcome', params: ({ event }) => event.outcome } },
        'tunnel.stop': {
          target: 'abandoning',
          actions: {
            type: 'recordOutcome',
            params: ({ event }) => ({
              kind: 'signal',
              exitCode: signalExitCode(event.signal),
              reason: `stopped by ${event.signal} before the background tunnel was ready`,
            }),
          },
        },
      },
    },
    abandoning: {
      description: 'Making sure no owner process or registry entry is left behind',
      invoke: {
        id: 'abandon',
        src: 'abandonOwner',
        input: ({ context }) => ({ id: context.id, owner: context.owner! }),
        onDone: { target: 'done' },
        onError: { target: 'done' },
      },
    },
    done: {
      description: "Returned to the caller: ready (exit 0) or the owner's failure",
      type: 'final',
    },
  },
  output: ({ context }) => ({
    ...(context.exit ?? failure('internal', 'launcher ended without an outcome')),
    ...(context.owner ? { owner: context.owner } : {}),
    ...(context.ready ? { ready: context.ready } : {}),
  }),
});
