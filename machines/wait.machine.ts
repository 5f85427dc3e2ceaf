// `pam tunnel wait`: watch the cross-process registry until a tunnel (found by the rules of `stop`)
// is ready or gone, bounded by --timeout. Reading the registry is a provided actor; the pause between
// reads and the timeout are named delays, so a test drives it with XState's simulated clock.

import { assign, fromPromise, setup } from 'xstate';
import { failure, failureOf, type Outcome } from './errors.js';
import type { RegistryEntry } from './ports.js';
import { firstOutcome, notProvided } from './provided.js';
import { selectTunnels } from './selector.js';

export type WaitGoal = 'ready' | 'gone';

export interface WaitInput {
  readonly selector: string;
  readonly goal: WaitGoal;
  readonly timeoutMs: number;
  /** Pause between two registry reads. */
  readonly pollMs: number;
}

export interface WaitContext extends WaitInput {
  /** The tunnel the selector matched once: from then on it is followed by id (a port or target may be reused). */
  readonly tracked?: { readonly id: string; readonly pid: number };
  readonly exit?: Outcome;
}

export interface WaitOutput extends Outcome {
  readonly id?: string;
}

/** What one registry read means for the wait: decided (with an outcome), or keep watching (maybe now tracking). */
export type WaitVerdict =
  | { readonly decided: true; readonly outcome: Outcome; readonly tracked?: Tracked }
  | { readonly decided: false; readonly tracked?: Tracked };

type Tracked = { readonly id: string; readonly pid: number };

const reached = (reason: string, tracked?: Tracked): WaitVerdict => ({
  decided: true,
  outcome: { kind: 'ok', exitCode: 0, reason },
  ...(tracked ? { tracked } : {}),
});

/** Pure: the wait's decision for one snapshot of the registry. */
export function judgeWait(context: Pick<WaitContext, 'selector' | 'goal' | 'tracked'>, entries: readonly RegistryEntry[]): WaitVerdict {
  const { goal, tracked } = context;
  if (tracked) {
    const entry = entries.find((candidate) => candidate.pid === tracked.pid);
    const tunnel = entry?.tunnels.find((candidate) => candidate.id === tracked.id);
    if (goal === 'gone') return tunnel ? { decided: false, tracked } : reached(`tunnel ${tracked.id} is gone`, tracked);
    if (!tunnel) {
      return {
        decided: true,
        outcome: failure('generic', `tunnel ${tracked.id} ended before it was ready: see \`pam tunnel history ${tracked.id}\``),
        tracked,
      };
    }
    return stateVerdict(tunnel.id, tunnel.state, tracked);
  }
  const selection = selectTunnels(entries, context.selector);
  if (!selection.ok) {
    // Nothing matches (yet): a tunnel being started elsewhere may appear; for `gone`, it already is.
    if (selection.failure.kind === 'generic') {
      return goal === 'gone' ? reached(`no running tunnel matches '${context.selector}'`) : { decided: false };
    }
    return { decided: true, outcome: selection.failure };
  }
  if (selection.selected.length > 1) {
    const ids = selection.selected.map(({ tunnel }) => tunnel.id).join(', ');
    return {
      decided: true,
      outcome: failure('usage', `'${context.selector}' matches ${selection.selected.length} tunnels (${ids}): name one by id`),
    };
  }
  const { entry, tunnel } = selection.selected[0]!;
  const now = { id: tunnel.id, pid: entry.pid };
  return goal === 'gone' ? { decided: false, tracked: now } : stateVerdict(tunnel.id, tunnel.state, now);
}

function stateVerdict(id: string, state: string, tracked: Tracked): WaitVerdict {
  if (state === 'ready') return reached(`tunnel ${id} is ready`, tracked);
  if (state === 'stopping')
    return { decided: true, outcome: failure('generic', `tunnel ${id} is stopping: it will never be ready`), tracked };
  return { decided: false, tracked };
}

const trackedBy = (verdict: WaitVerdict): { tracked?: Tracked } => (verdict.tracked ? { tracked: verdict.tracked } : {});

export const waitMachine = setup({
  types: {
    context: {} as WaitContext,
    input: {} as WaitInput,
    output: {} as WaitOutput,
  },
  actors: {
    /** The live entries of every owner of this user (stale ones are skipped). */
    readRegistry: fromPromise<RegistryEntry[]>(notProvided('readRegistry actor')),
  },
  actions: {
    recordOutcome: assign(({ context }, outcome: Outcome) => firstOutcome(context, outcome)),
    track: assign((_, params: { tracked?: Tracked }) => (params.tracked ? { tracked: params.tracked } : {})),
  },
  delays: {
    waitTimeout: ({ context }) => context.timeoutMs,
    pollInterval: ({ context }) => context.pollMs,
  },
}).createMachine({
  id: 'wait',
  description: 'Wait until a registered tunnel (any owner process) is ready or gone',
  context: ({ input }) => ({ ...input }),
  initial: 'reading',
  after: {
    waitTimeout: {
      target: '.done',
      actions: {
        type: 'recordOutcome',
        params: ({ context }) =>
          failure(
            'waitTimeout',
            `${context.tracked ? `tunnel ${context.tracked.id}` : `no tunnel matching '${context.selector}'`} was not ${context.goal} within ${context.timeoutMs / 1000} s`,
          ),
      },
    },
  },
  states: {
    reading: {
      description: 'Reading the registry once',
      invoke: {
        id: 'read',
        src: 'readRegistry',
        onDone: [
          {
            guard: ({ context, event }) => judgeWait(context, event.output).decided,
            target: 'done',
            actions: [
              { type: 'track', params: ({ context, event }) => trackedBy(judgeWait(context, event.output)) },
              { type: 'recordOutcome', params: ({ context, event }) => (judgeWait(context, event.output) as { outcome: Outcome }).outcome },
            ],
          },
          { target: 'pausing', actions: { type: 'track', params: ({ context, event }) => trackedBy(judgeWait(context, event.output)) } },
        ],
        onError: { target: 'done', actions: { type: 'recordOutcome', params: ({ event }) => failureOf(event.error) } },
      },
    },
    pausing: {
      description: 'Not there yet: pausing before the next read',
      after: { pollInterval: { target: 'reading' } },
    },
    done: { description: 'Decided: reached, never reachable, or timed out', type: 'final' },
  },
  output: ({ context }) => ({
    ...(context.exit ?? failure('internal', 'wait ended without an outcome')),
    ...(context.tracked ? { id: context.tracked.id } : {}),
  }),
});
