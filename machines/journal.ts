// The tunnel's journal, pure: what each received event looks like on disk (a redacted projection:
// no tokens, no SDP, no live handles), and how a lifecycle is replayed through the machine with inert
// actors to check that the recorded state path is the one the machine produces.

import { createActor, fromCallback, fromPromise, SimulatedClock, type AnyEventObject, type StateValue } from 'xstate';
import type { Outcome } from './errors.js';
import { tunnelMachine, type TunnelInput } from './tunnel.machine.js';

export interface JournalEvent {
  readonly type: string;
  readonly signal?: string;
  /** Where a stop came from (e.g. `pam tunnel stop`), when known. */
  readonly origin?: string;
  readonly reason?: string;
  readonly exit?: { readonly exitCode: number; readonly signal?: string };
  /** The local listeners' addresses, one per target (the only actor output worth keeping; one object in older journals). */
  readonly output?: ListenerAddress | readonly ListenerAddress[];
  /** The selected ICE candidate pair, when the link was established (`direct` or `relay`). */
  readonly path?: { readonly kind: string; readonly pair: string };
  readonly error?: { readonly kind?: string; readonly message: string };
}

export interface JournalMeta {
  readonly id: string;
  readonly pid: number;
  /** The owner's process start time, to tell later whether it died without stopping. */
  readonly startTime: string;
  readonly input: TunnelInput;
}

export interface JournalEntry {
  readonly seq: number;
  /** ISO-8601 */
  readonly at: string;
  readonly event: JournalEvent;
  readonly state: string;
  readonly output?: Outcome;
  /** Only on the first entry. */
  readonly meta?: JournalMeta;
}

/** `{ ready: 'serving' }` → `ready.serving`. */
export function stateName(value: StateValue): string {
  if (typeof value === 'string') return value;
  return Object.entries(value)
    .map(([key, child]) =>
      child && (typeof child === 'string' || Object.keys(child).length > 0) ? `${key}.${stateName(child as StateValue)}` : key,
    )
    .join(',');
}

/** The safe, replayable projection of an event the tunnel actor received. */
interface ListenerAddress {
  readonly host: string;
  readonly port: number;
}

const isListenerAddress = (value: unknown): value is ListenerAddress =>
  typeof value === 'object' && value !== null && typeof (value as { port?: unknown }).port === 'number';

const isListenerArray = (value: JournalEvent['output']): value is readonly ListenerAddress[] => Array.isArray(value);

export function journalEvent(event: AnyEventObject): JournalEvent {
  const projection: { -readonly [K in keyof JournalEvent]: JournalEvent[K] } = { type: event.type };
  if (typeof event.signal === 'string') projection.signal = event.signal;
  if (typeof event.origin === 'string') projection.origin = event.origin;
  if (typeof event.reason === 'string') projection.reason = event.reason;
  if (event.type === 'command.exited' && typeof event.exit?.exitCode === 'number') {
    projection.exit = { exitCode: event.exit.exitCode, ...(typeof event.exit.signal === 'string' ? { signal: event.exit.signal } : {}) };
  }
  const outputs: unknown[] | undefined = Array.isArray(event.output) ? event.output : undefined;
  if (event.type.startsWith('xstate.done.actor.') && outputs?.length && outputs.every(isListenerAddress)) {
    projection.output = outputs.map((listener) => ({ host: String(listener.host), port: listener.port }));
  } else if (event.type.startsWith('xstate.done.actor.') && isListenerAddress(event.output)) {
    projection.output = { host: String(event.output.host), port: event.output.port };
  }
  if (event.type.startsWith('xstate.done.actor.') && typeof event.output?.path === 'function') {
    const path: unknown = event.output.path();
    const { kind, pair } = (path ?? {}) as { kind?: unknown; pair?: unknown };
    if (typeof kind === 'string' && typeof pair === 'string') projection.path = { kind, pair };
  }
  if (event.type.startsWith('xstate.error.actor.')) {
    const error = event.error as { kind?: unknown; message?: unknown } | undefined;
    projection.error = {
      ...(typeof error?.kind === 'string' ? { kind: error.kind } : {}),
      message: typeof error?.message === 'string' ? error.message : String(error),
    };
  }
  return projection;
}

/** Undo the projection: the event to feed the machine on replay. */
function replayEvent(event: JournalEvent): AnyEventObject {
  const { type, ...fields } = event;
  if (type.startsWith('xstate.done.actor.')) {
    const inert = (address: ListenerAddress) => ({ ...address, accept() {}, close: async () => undefined });
    const { output } = event;
    if (isListenerArray(output)) return { type, output: output.map(inert) };
    // Journals written before several targets per start recorded the claimed listener alone.
    if (output && type === 'xstate.done.actor.claim') return { type, output: [inert(output)] };
    return { type, output: output ? inert(output) : {} };
  }
  if (type.startsWith('xstate.error.actor.')) {
    const error = Object.assign(
      new Error(event.error?.message ?? 'unknown'),
      event.error?.kind ? { name: 'TunnelError', kind: event.error.kind } : {},
    );
    return { type, error };
  }
  return { type, ...fields };
}

// Typed loosely on purpose: one inert implementation stands in for actors of every output type.
// biome-ignore lint/suspicious/noExplicitAny: one inert implementation for actors of every output type
const never = () => new Promise<any>(() => undefined);

/** The machine with every side effect inert: events drive it, nothing is done. */
export const inertTunnelMachine = tunnelMachine.provide({
  actors: {
    claimLocal: fromPromise(never),
    negotiate: fromPromise(never),
    establish: fromPromise(never),
    reconnect: fromPromise(never),
    publish: fromPromise(never),
    teardown: fromPromise(never),
    serveConnections: fromCallback(() => undefined),
    runCommand: fromCallback(() => undefined),
    watchSignals: fromCallback(() => undefined),
  },
  actions: {
    reportState: () => undefined,
    announceReady: () => undefined,
    announceSkipped: () => undefined,
    announceLink: () => undefined,
  },
});

export interface ReplayResult {
  readonly matches: boolean;
  readonly recorded: readonly string[];
  readonly replayed: readonly string[];
  /** Index of the first entry whose replayed state differs. */
  readonly divergedAt?: number;
  readonly output?: Outcome;
}

export function replay(entries: readonly JournalEntry[]): ReplayResult {
  const meta = entries[0]?.meta;
  if (!meta) throw new Error('the journal has no first entry with the tunnel input: cannot replay');
  const actor = createActor(inertTunnelMachine, { input: meta.input, clock: new SimulatedClock() });
  actor.start();
  const replayed = [stateName(actor.getSnapshot().value)];
  for (const entry of entries.slice(1)) {
    if (actor.getSnapshot().status !== 'active') break;
    actor.send(replayEvent(entry.event) as Parameters<typeof actor.send>[0]);
    replayed.push(stateName(actor.getSnapshot().value));
  }
  const snapshot = actor.getSnapshot();
  actor.stop();
  const recorded = entries.map((entry) => entry.state);
  const divergedAt = recorded.findIndex((state, index) => replayed[index] !== state);
  const output = snapshot.status === 'done' ? (snapshot.output as Outcome) : undefined;
  const recordedOutput = entries.at(-1)?.output;
  const outputMatches = !recordedOutput || (output?.exitCode === recordedOutput.exitCode && output?.reason === recordedOutput.reason);
  return {
    matches: divergedAt < 0 && replayed.length === recorded.length && outputMatches,
    recorded,
    replayed,
    ...(divergedAt >= 0 ? { divergedAt } : {}),
    ...(output ? { output } : {}),
  };
}

/** Parse journal text: one entry a line; a torn or foreign line (a crash mid-append) is skipped. */
export function parseJournal(text: string): JournalEntry[] {
  const entries: JournalEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const entry = JSON.parse(line) as JournalEntry;
      if (typeof entry.seq === 'number' && typeof entry.state === 'string' && typeof entry.event?.type === 'string') entries.push(entry);
    } catch {
      // torn last line
    }
  }
  return entries;
}
