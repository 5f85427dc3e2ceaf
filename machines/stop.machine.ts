// Stopping one registered tunnel from another process: re-check the owner's identity right before
// signalling (PID reuse), ask it to stop, wait for it to go, and force only when told to.

import { assign, fromPromise, setup } from 'xstate';
import { failure, failureOf, type Outcome } from './errors.js';
import type { RegistryEntry, TunnelRecord } from './ports.js';
import { firstOutcome, notProvided } from './provided.js';

export interface StopInput {
  readonly entry: RegistryEntry;
  readonly tunnel: TunnelRecord;
  /** Stop only this tunnel (through the owner's control channel) rather than its whole process. */
  readonly onlyThisTunnel: boolean;
  readonly waitMs: number;
  readonly force: boolean;
}

export interface StopContext extends StopInput {
  readonly exit?: Outcome;
  readonly forced?: boolean;
}

export interface StopOutput extends Outcome {
  readonly id: string;
  readonly pid: number;
  readonly target: string;
  readonly forced: boolean;
}

type TargetInput = Pick<StopInput, 'entry' | 'tunnel' | 'onlyThisTunnel' | 'waitMs'>;

/** How long the owner has to answer a stop request: --wait, but at least a second (--wait 0 still asks). */
export function requestWaitMs(waitMs: number): number {
  return Math.max(waitMs, 1_000);
}

export const stopMachine = setup({
  types: { context: {} as StopContext, input: {} as StopInput, output: {} as StopOutput },
  actors: {
    /** Is the entry's owner still the process that wrote it (pid + start time)? */
    verifyOwner: fromPromise<boolean, TargetInput>(notProvided('verifyOwner actor')),
    /** SIGTERM the owner, or ask its control channel to stop one tunnel. */
    requestStop: fromPromise<void, TargetInput>(notProvided('requestStop actor')),
    /** Resolves when the tunnel is gone (owner exited, or tunnel dropped from its entry). */
    awaitGone: fromPromise<void, TargetInput>(notProvided('awaitGone actor')),
    /** SIGKILL the owner (identity re-checked) and what it started; remove what it left: registry entry, pid file. */
    forceStop: fromPromise<void, TargetInput>(notProvided('forceStop actor')),
  },
  actions: {
    recordOutcome: assign(({ context }, outcome: Outcome) => firstOutcome(context, outcome)),
  },
  guards: {
    isForceAllowed: ({ context }) => context.force,
  },
  delays: {
    stopWait: ({ context }) => context.waitMs,
    requestWait: ({ context }) => requestWaitMs(context.waitMs),
  },
}).createMachine({
  id: 'stop',
  description: 'Stop one registered tunnel owned by another process',
  context: ({ input }) => ({ ...input }),
  initial: 'verifying',
  states: {
    verifying: {
      description: 'Re-checking pid and start time immediately before any signal',
      invoke: {
        id: 'verify',
        src: 'verifyOwner',
        input: ({ context }) => context,
        onDone: [
          { guard: ({ event }) => event.output, target: 'requesting' },
          {
            target: 'done',
            actions: { type: 'recordOutcome', params: { kind: 'ok', exitCode: 0, reason: 'already stopped (its owner is gone)' } },
          },
        ],
        onError: { target: 'done', actions: { type: 'recordOutcome', params: ({ event }) => failureOf(event.error) } },
      },
    },
    requesting: {
      description: 'Asking the owner to stop (SIGTERM, or the control channel for one tunnel)',
      invoke: {
        id: 'request',
        src: 'requestStop',
        input: ({ context }) => context,
        onDone: { target: 'waiting' },
        onError: { target: 'done', actions: { type: 'recordOutcome', params: ({ event }) => failureOf(event.error) } },
      },
      // An owner that does not answer (frozen, SIGSTOP) is one that did not stop: --force signals it.
      after: {
        requestWait: [
          { guard: 'isForceAllowed', target: 'forcing' },
          {
            target: 'done',
            actions: {
              type: 'recordOutcome',
              params: ({ context }) =>
                failure(
                  'generic',
                  `tunnel ${context.tunnel.id} (pid ${context.entry.pid}) did not answer within ${requestWaitMs(context.waitMs) / 1000} s; retry with --force to SIGKILL its owner`,
                ),
            },
          },
        ],
      },
    },
    waiting: {
      description: 'Waiting up to --wait for the tunnel to go',
      invoke: {
        id: 'await',
        src: 'awaitGone',
        input: ({ context }) => context,
        onDone: { target: 'done', actions: { type: 'recordOutcome', params: { kind: 'ok', exitCode: 0, reason: 'stopped' } } },
        onError: { target: 'done', actions: { type: 'recordOutcome', params: ({ event }) => failureOf(event.error) } },
      },
      after: {
        stopWait: [
          { guard: 'isForceAllowed', target: 'forcing' },
          {
            target: 'done',
            actions: {
              type: 'recordOutcome',
              params: ({ context }) =>
                failure(
                  'generic',
                  `tunnel ${context.tunnel.id} (pid ${context.entry.pid}) still running after ${context.waitMs / 1000} s; retry with --force to SIGKILL it`,
                ),
            },
          },
        ],
      },
    },
    forcing: {
      description: 'SIGKILL and clean up after the owner',
      invoke: {
        id: 'force',
        src: 'forceStop',
        input: ({ context }) => context,
        onDone: {
          target: 'done',
          actions: [
            assign({ forced: true }),
            { type: 'recordOutcome', params: { kind: 'ok', exitCode: 0, reason: 'killed with SIGKILL after --wait' } },
          ],
        },
        onError: { target: 'done', actions: { type: 'recordOutcome', params: ({ event }) => failureOf(event.error) } },
      },
    },
    done: { description: 'Reported', type: 'final' },
  },
  output: ({ context }) => ({
    ...(context.exit ?? failure('internal', 'stop ended without an outcome')),
    id: context.tunnel.id,
    pid: context.entry.pid,
    target: context.tunnel.target,
    forced: context.forced ?? false,
  }),
});
