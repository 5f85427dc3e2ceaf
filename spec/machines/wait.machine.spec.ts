// The wait machine against a memory registry that changes between reads, on XState's simulated clock:
// every verdict (ready, ended, stopping, ambiguous, gone, timeout, unreadable registry), and every
// transition the machine defines taken by some scenario.

import t from 'tap';
import { createActor, SimulatedClock, type AnyStateMachine, type AnyTransitionDefinition, type StateNode } from 'xstate';
import { TunnelError } from '../../machines/errors.js';
import type { Registry, RegistryState, TunnelRecord } from '../../machines/ports.js';
import { provideWait } from '../../machines/wait.actors.js';
import { judgeWait, type WaitGoal, type WaitOutput } from '../../machines/wait.machine.js';
import { createMemoryRegistry, createMemoryStore, type MemoryStore } from '../support/memory-registry.js';

const pollMs = 100;
const timeoutMs = 1_000;

function record(id: string, target: string, port: number, state: RegistryState): TunnelRecord {
  return { id, target, gateway: 'http://127.0.0.1:9', host: '127.0.0.1', port, mode: 'background', state, reconnects: 0, startedAt: 'T' };
}

/** One change to the registry, applied before the read with the same index. */
type Step = (owners: { a: Registry; b: Registry; store: MemoryStore }) => Promise<void> | void;

/** A transition by where it is defined (machine.provide() copies the nodes, so identity is per copy). */
const keyOf = (transition: AnyTransitionDefinition) =>
  `${transition.source.id} on ${transition.eventType} #${transition.source.transitions.get(transition.eventType)?.indexOf(transition)}`;
const taken = new Set<string>();
let machine: AnyStateMachine | undefined;

async function run(selector: string, goal: WaitGoal, steps: Step[], registry?: (store: MemoryStore) => Pick<Registry, 'entries'>) {
  const store = createMemoryStore();
  const owners = {
    a: createMemoryRegistry(store, { pid: 101, startTime: 'a' }),
    b: createMemoryRegistry(store, { pid: 102, startTime: 'b' }),
    store,
  };
  const clock = new SimulatedClock();
  const provided = provideWait({ registry: registry?.(store) ?? owners.a });
  machine ??= provided;
  const actor = createActor(provided, {
    input: { selector, goal, timeoutMs, pollMs },
    clock,
    inspect: (event) => {
      if (event.type === '@xstate.microstep')
        for (const transition of (event as { _transitions: AnyTransitionDefinition[] })._transitions) taken.add(keyOf(transition));
    },
  });
  const flush = () => new Promise((resolve) => setImmediate(resolve));
  let output: WaitOutput | undefined;
  actor.subscribe({ complete: () => (output = actor.getSnapshot().output as WaitOutput) });
  await steps[0]?.(owners);
  actor.start();
  for (let tick = 1; output === undefined && tick <= 2 * (timeoutMs / pollMs); tick += 1) {
    await flush();
    await steps[tick]?.(owners);
    clock.increment(pollMs);
    await flush();
  }
  return output;
}

t.test('--for ready: a tunnel that appears, connects and becomes ready', async (t) => {
  const out = await run('db', 'ready', [
    () => undefined,
    ({ b }) => b.put(record('aaaa0001', 'db', 15432, 'connecting')),
    () => undefined,
    ({ b }) => b.put(record('aaaa0001', 'db', 15432, 'ready')),
  ]);
  t.match(out, { exitCode: 0, kind: 'ok', id: 'aaaa0001', reason: /aaaa0001 is ready/ });
});

t.test('--for ready: already ready answers at once', async (t) => {
  t.match(await run('15432', 'ready', [({ b }) => b.put(record('aaaa0002', 'db', 15432, 'ready'))]), { exitCode: 0, id: 'aaaa0002' });
});

t.test('--for ready: the tunnel ends while waited for → 1, even if another one takes its port', async (t) => {
  const out = await run('15432', 'ready', [
    ({ b }) => b.put(record('aaaa0003', 'db', 15432, 'connecting')),
    () => undefined,
    ({ b, a }) => Promise.all([b.remove('aaaa0003'), a.put(record('bbbb0003', 'web', 15432, 'ready'))]).then(() => undefined),
  ]);
  t.match(out, { exitCode: 1, kind: 'generic', id: 'aaaa0003', reason: /ended before it was ready/ });
});

t.test('--for ready: an owner killed -9 while connecting counts as ended', async (t) => {
  const out = await run('db', 'ready', [({ b }) => b.put(record('aaaa0004', 'db', 1, 'connecting')), ({ store }) => store.kill(102)]);
  t.match(out, { exitCode: 1, id: 'aaaa0004' });
});

t.test('--for ready: a tunnel already stopping will never be ready → 1', async (t) => {
  const out = await run('db', 'ready', [
    ({ b }) => b.put(record('aaaa0005', 'db', 1, 'reconnecting')),
    ({ b }) => b.put(record('aaaa0005', 'db', 1, 'stopping')),
  ]);
  t.match(out, { exitCode: 1, reason: /stopping: it will never be ready/ });
});

t.test('--for ready: nothing ever matches → 124 at --timeout', async (t) => {
  t.match(await run('db', 'ready', []), { exitCode: 124, kind: 'waitTimeout', reason: /no tunnel matching 'db' was not ready within 1 s/ });
});

t.test('--for ready: connecting for ever → 124 naming the tunnel', async (t) => {
  t.match(await run('db', 'ready', [({ b }) => b.put(record('aaaa0006', 'db', 1, 'connecting'))]), {
    exitCode: 124,
    id: 'aaaa0006',
    reason: /tunnel aaaa0006 was not ready/,
  });
});

t.test('ambiguous and blank selectors are usage errors, as for stop', async (t) => {
  const two: Step = ({ a, b }) =>
    Promise.all([a.put(record('aaaa0007', 'db', 1, 'ready')), b.put(record('bbbb0007', 'db', 2, 'ready'))]).then(() => undefined);
  t.match(await run('db', 'ready', [two]), { exitCode: 2, reason: /'db' matches 2 tunnels: aaaa0007 .*bbbb0007/ });
  t.match(await run('db', 'gone', [two]), { exitCode: 2 });
  t.match(await run(' ', 'ready', []), { exitCode: 2, reason: /empty/ });
});

t.test('--for gone: stopped later → 0; nothing running → 0 at once; still there → 124', async (t) => {
  const out = await run('aaaa', 'gone', [
    ({ b }) => b.put(record('aaaa0008', 'db', 1, 'ready')),
    () => undefined,
    ({ b }) => b.remove('aaaa0008'),
  ]);
  t.match(out, { exitCode: 0, id: 'aaaa0008', reason: /aaaa0008 is gone/ });
  t.match(await run('db', 'gone', []), { exitCode: 0, reason: /no running tunnel matches 'db'/ });
  t.match(await run('db', 'gone', [({ b }) => b.put(record('aaaa0009', 'db', 1, 'ready'))]), {
    exitCode: 124,
    id: 'aaaa0009',
    reason: /was not gone/,
  });
});

t.test('an unreadable registry ends the wait with its own code', async (t) => {
  const broken = () => ({
    entries: async () => {
      throw new TunnelError('unsafeRegistry', 'registry directory /x is a symlink');
    },
  });
  t.match(await run('db', 'ready', [], broken), { exitCode: 78, kind: 'unsafeRegistry' });
});

t.test('judgeWait is pure: the same snapshot, the same verdict', async (t) => {
  const entries = [{ schema: 1 as const, pid: 7, startTime: 's', hostname: 'h', tunnels: [record('cccc0001', 'db', 5, 'ready')] }];
  t.same(judgeWait({ selector: 'db', goal: 'ready' }, entries), judgeWait({ selector: 'db', goal: 'ready' }, entries));
  t.same(judgeWait({ selector: 'db', goal: 'gone' }, entries), { decided: false, tracked: { id: 'cccc0001', pid: 7 } });
});

t.test('every transition of the wait machine was taken', async (t) => {
  const all: AnyTransitionDefinition[] = [];
  const visit = (node: StateNode) => {
    for (const list of node.transitions.values()) all.push(...list);
    for (const child of Object.values(node.states)) visit(child as StateNode);
  };
  visit(machine!.root as StateNode);
  const missed = all.map(keyOf).filter((key) => !taken.has(key));
  t.ok(all.length >= 5, 'the machine has transitions');
  t.same(missed, [], 'no transition left untaken');
});
