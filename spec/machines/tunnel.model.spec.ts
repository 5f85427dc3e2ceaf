// Model-based test of the tunnel machine: paths are generated from the machine itself (xstate/graph:
// shortest paths, simple paths, and one path through every edge of the state graph), each is replayed
// against a real actor wired through provideTunnel() with fake ports and a simulated clock, and its
// exit code is checked against an oracle written independently of the machine. Finally every
// transition the machine defines must have been taken by some replay.

import t from 'tap';
import { createActor, fromCallback, fromPromise, SimulatedClock, type AnyStateMachine, type EventObject, type Snapshot } from 'xstate';
import { getAdjacencyMap, getShortestPaths, getSimplePaths } from 'xstate/graph';
import { TunnelError, type StopSignal } from '../../machines/errors.js';
import { provideTunnel } from '../../machines/tunnel.actors.js';
import { tunnelMachine, type TunnelInput } from '../../machines/tunnel.machine.js';
import { createMemoryRegistry, createMemoryStore } from '../support/memory-registry.js';
import {
  createFakeListeners,
  createFakeRunner,
  createFakeTransport,
  createMemoryPidFiles,
  FakeSignals,
  gateRegistry,
  Gates,
} from '../support/fakes.js';

type StepEvent = EventObject & { signal?: StopSignal; output?: unknown; error?: unknown; exit?: { exitCode: number }; reason?: string };
interface Variant {
  readonly name: string;
  readonly input: TunnelInput;
}

const timeoutMs = 2_000;
const variants: Variant[] = [
  {
    name: 'foreground',
    input: {
      id: 'fg',
      flags: { target: 'web', gateway: 'http://127.0.0.1:9', foreground: true, timeout: '2', reconnectAttempts: '2' },
      startedAt: 'T',
      interactive: false,
    },
  },
  {
    name: 'foreground, never reconnect',
    input: {
      id: 'fg0',
      flags: { target: 'web', gateway: 'http://127.0.0.1:9', timeout: '2', reconnectAttempts: '0' },
      startedAt: 'T',
      interactive: false,
    },
  },
  {
    name: 'run at a terminal',
    input: {
      id: 'run',
      flags: { target: 'db', gateway: 'http://127.0.0.1:9', run: 'work', timeout: '2', reconnectAttempts: '2' },
      startedAt: 'T',
      interactive: true,
    },
  },
  {
    name: 'run, never reconnect',
    input: {
      id: 'run0',
      flags: { target: 'db', gateway: 'http://127.0.0.1:9', run: 'work', timeout: '2', reconnectAttempts: '0' },
      startedAt: 'T',
      interactive: false,
    },
  },
  {
    name: 'conflicting modes',
    input: {
      id: 'bad',
      flags: { target: 'web', gateway: 'http://127.0.0.1:9', foreground: true, background: true },
      startedAt: 'T',
      interactive: false,
    },
  },
];

const actorErrors: Record<string, unknown> = {
  claim: new TunnelError('portBusy', 'port busy'),
  negotiate: new TunnelError('authRefused', 'token refused'),
  establish: new TunnelError('gatewayUnreachable', 'ICE failed'),
  publish: new Error('disk full'),
  reconnect: new TunnelError('gatewayUnreachable', 'gateway still down'),
  teardown: new Error('close failed'),
};

/** A reconnect the gateway refuses (the key was revoked while the link was down): final, never retried. */
const refusedReconnect = new TunnelError('accessRefused', 'the gateway refused access: key removed');

/** The events worth trying in a state: what its adapters or the outside world can really send there. */
function eventsFor(snapshot: { matches(value: unknown): boolean }): StepEvent[] {
  const stops: StepEvent[] = [{ type: 'tunnel.stop', signal: 'SIGTERM' }];
  const invoke = (id: string, output: unknown = {}): StepEvent[] => [
    { type: `xstate.done.actor.${id}`, output },
    { type: `xstate.error.actor.${id}`, error: actorErrors[id] },
  ];
  if (snapshot.matches('idle')) return [{ type: 'tunnel.start' }, ...stops];
  const timeout: StepEvent = { type: 'xstate.after.connectTimeout.tunnel.connecting' };
  if (snapshot.matches({ connecting: 'claiming' })) return [...invoke('claim', { host: '127.0.0.1', port: 40000 }), timeout, ...stops];
  if (snapshot.matches({ connecting: 'negotiating' })) return [...invoke('negotiate'), timeout, ...stops];
  if (snapshot.matches({ connecting: 'establishing' })) return [...invoke('establish'), timeout, ...stops];
  if (snapshot.matches({ connecting: 'publishing' })) return [...invoke('publish'), timeout, ...stops];
  for (const work of ['serving', 'runningCommand'] as const) {
    if (!snapshot.matches({ ready: work })) continue;
    const command: StepEvent[] =
      work === 'runningCommand'
        ? [
            { type: 'command.exited', exit: { exitCode: 3 } },
            { type: 'tunnel.stop', signal: 'SIGINT' },
          ]
        : [];
    const path = `tunnel.ready.${work}.reconnecting`;
    if (snapshot.matches({ ready: { [work]: 'linked' } }))
      return [{ type: 'link.lost', reason: 'peer gone' }, { type: 'link.revoked', reason: 'access revoked' }, ...command, ...stops];
    if (snapshot.matches({ ready: { [work]: { reconnecting: 'waiting' } } })) {
      return [{ type: `xstate.after.reconnectBackoff.${path}.waiting` }, ...command, ...stops];
    }
    if (snapshot.matches({ ready: { [work]: { reconnecting: 'attempting' } } })) {
      return [
        ...invoke('reconnect', {}),
        { type: 'xstate.error.actor.reconnect', error: refusedReconnect },
        { type: `xstate.after.connectTimeout.${path}.attempting` },
        ...command,
        ...stops,
      ];
    }
    return [...command, ...stops]; // gone: only the command (or a signal) ends it
  }
  if (snapshot.matches('stopping')) return [...invoke('teardown'), ...stops];
  return [];
}

// A machine for traversal only: same structure, inert implementations.
const inert = () => undefined;
const traversable = tunnelMachine.provide({
  actors: {
    claimLocal: fromPromise(async () => ({}) as never) as never,
    negotiate: fromPromise(async () => ({}) as never) as never,
    establish: fromPromise(async () => ({}) as never) as never,
    reconnect: fromPromise(async () => ({}) as never) as never,
    publish: fromPromise(async () => undefined) as never,
    teardown: fromPromise(async () => undefined) as never,
    serveConnections: fromCallback(inert),
    runCommand: fromCallback(inert),
    watchSignals: fromCallback(inert),
  },
  actions: { reportState: inert, announceReady: inert, announceSkipped: inert, announceLink: inert },
});

interface Path {
  readonly events: StepEvent[];
  readonly states: string[];
}

const key = (snapshot: { value: unknown; context: unknown }) => {
  const context = snapshot.context as { exit?: unknown; reconnectAttempt?: number; commandSignalled?: string };
  return JSON.stringify([snapshot.value, context.exit, context.reconnectAttempt ?? 0, context.commandSignalled ?? null]);
};

function generatePaths(input: TunnelInput): Path[] {
  const options = { input, events: eventsFor as never, serializeState: key as never };
  const machine = traversable as unknown as AnyStateMachine;
  const fromGraph = [
    ...getShortestPaths(machine, { ...options, toState: (s: Snapshot<unknown>) => s.status === 'done' } as never),
    ...getSimplePaths(machine, { ...options, toState: (s: Snapshot<unknown>) => s.status === 'done' } as never),
  ].map((path) => ({
    events: path.steps.slice(1).map((step) => step.event as StepEvent),
    states: path.steps.slice(1).map((step) => JSON.stringify((step.state as { value: unknown }).value)),
  }));

  // Edge coverage: for every edge, the shortest way to its source, the edge, then the shortest way to an end.
  const adjacency = getAdjacencyMap(machine, options as never) as unknown as Record<
    string,
    {
      state: { value: unknown; status: string };
      transitions: Record<string, { event: StepEvent; state: { value: unknown; status: string } }>;
    }
  >;
  const stateKey = (s: { value: unknown; context?: unknown }) => key(s as never);
  const shortestTo = new Map<string, Path>(
    getShortestPaths(machine, options as never).map((p) => [
      stateKey(p.state as never),
      {
        events: p.steps.slice(1).map((s) => s.event as StepEvent),
        states: p.steps.slice(1).map((s) => JSON.stringify((s.state as { value: unknown }).value)),
      },
    ]),
  );
  const toEnd = (from: string): Path | undefined => {
    const queue: Array<[string, Path]> = [[from, { events: [], states: [] }]];
    const seen = new Set([from]);
    while (queue.length > 0) {
      const [at, path] = queue.shift()!;
      const node = adjacency[at];
      if (!node) continue;
      if (node.state.status === 'done') return path;
      for (const edge of Object.values(node.transitions)) {
        const next = stateKey(edge.state as never);
        if (seen.has(next)) continue;
        seen.add(next);
        queue.push([next, { events: [...path.events, edge.event], states: [...path.states, JSON.stringify(edge.state.value)] }]);
      }
    }
    return undefined;
  };
  const viaEdges: Path[] = [];
  for (const [from, node] of Object.entries(adjacency)) {
    const prefix = shortestTo.get(from);
    if (!prefix) continue;
    for (const edge of Object.values(node.transitions)) {
      const rest = toEnd(stateKey(edge.state as never));
      if (!rest) continue;
      viaEdges.push({
        events: [...prefix.events, edge.event, ...rest.events],
        states: [...prefix.states, JSON.stringify(edge.state.value), ...rest.states],
      });
    }
  }

  const unique = new Map<string, Path>();
  for (const path of [...fromGraph, ...viaEdges]) unique.set(JSON.stringify(path.events), path);
  return [...unique.values()];
}

/** The exit code a path must end with, from the product's rules (not from the machine's code). */
function oracle(variant: Variant, path: Path): number {
  if (variant.input.flags.background && variant.input.flags.foreground) {
    return path.events[0]?.type === 'tunnel.start' ? 2 : 143;
  }
  let decided: number | undefined;
  let stateBefore = '"idle"';
  const budget = Number(variant.input.flags.reconnectAttempts ?? 5);
  let failedAttempts = 0;
  let commandSignalled = false;
  const attemptFailed = () => {
    failedAttempts += 1;
    if (failedAttempts >= budget) decided = 69; // reconnect budget spent: lost for good
  };
  for (const [index, event] of path.events.entries()) {
    const where = stateBefore;
    stateBefore = path.states[index]!;
    if (decided !== undefined && !(event.type === 'tunnel.stop' && where === '"stopping"')) continue;
    const signalCode = 128 + (event.signal === 'SIGINT' ? 2 : 15);
    if (event.type === 'tunnel.stop') {
      if (where === '"stopping"') decided = decided !== undefined && decided !== 0 ? decided : signalCode;
      else if (where.includes('serving')) decided = 0;
      else if (where.includes('runningCommand') && !commandSignalled)
        commandSignalled = true; // forwarded: the command decides
      else if (where.includes('runningCommand'))
        decided = signalCode; // a second signal stops waiting for the command
      else decided = signalCode;
    } else if (event.type === 'link.lost') {
      failedAttempts = 0;
      if (budget === 0) decided = 69; // no reconnect: lost for good
    } else if (event.type === 'link.revoked')
      decided = 77; // access withdrawn: never reconnected
    else if (event.type === 'command.exited') decided = event.exit!.exitCode;
    else if (event.type.startsWith('xstate.after.reconnectBackoff')) continue;
    else if (event.type.startsWith('xstate.after') && event.type.includes('reconnecting')) attemptFailed();
    else if (event.type === 'xstate.error.actor.reconnect' && event.error === refusedReconnect) decided = 77;
    else if (event.type === 'xstate.error.actor.reconnect') attemptFailed();
    else if (event.type.startsWith('xstate.after')) decided = 124;
    else if (event.type.startsWith('xstate.error.actor.')) {
      const kind = event.type.slice('xstate.error.actor.'.length);
      decided = { claim: 75, negotiate: 77, establish: 69, publish: 70, teardown: 70, reconnect: 69 }[kind];
    }
  }
  return decided ?? -1;
}

/** Every transition the machine defines, as "source#event#index". */
function allTransitions(machine: AnyStateMachine): Set<string> {
  const found = new Set<string>();
  const visit = (node: AnyStateMachine['root']) => {
    for (const [eventType, list] of node.transitions) for (const index of list.keys()) found.add(`${node.id}#${eventType}#${index}`);
    for (const index of node.always?.keys() ?? []) found.add(`${node.id}#always#${index}`);
    for (const child of Object.values(node.states)) visit(child as AnyStateMachine['root']);
  };
  visit(machine.root);
  return found;
}

const flush = async () => {
  for (let i = 0; i < 5; i += 1) await new Promise((resolve) => setImmediate(resolve));
};

async function replay(variant: Variant, path: Path, taken: Set<string>): Promise<{ exitCode: number; visited: string[] }> {
  const gates = new Gates(new Set(['claim', 'negotiate', 'establish', 'publish', 'teardown']));
  const store = createMemoryStore();
  const signals = new FakeSignals();
  const transport = createFakeTransport({ gates });
  const runner = createFakeRunner({ trapsSignals: true });
  const machine = provideTunnel({
    listeners: createFakeListeners(gates),
    transport,
    registry: gateRegistry(createMemoryRegistry(store, { pid: 100, startTime: 'boot-1' }), gates),
    pidFiles: createMemoryPidFiles(),
    signals,
    runner,
    ownerPid: 100,
    announce: { ready: inert, skipped: inert, problem: inert },
  });
  const clock = new SimulatedClock();
  const actor = createActor(machine, {
    input: variant.input,
    clock,
    inspect: (inspection) => {
      if (inspection.type !== '@xstate.microstep') return;
      const event = (inspection as { event: EventObject }).event;
      for (const transition of (
        inspection as unknown as {
          _transitions: Array<{ source: { id: string; transitions: Map<string, unknown[]>; always?: unknown[] }; eventType: string }>;
        }
      )._transitions) {
        const list = transition.eventType ? transition.source.transitions.get(transition.eventType) : undefined;
        const index = list ? list.indexOf(transition) : (transition.source.always ?? []).indexOf(transition);
        taken.add(`${transition.source.id}#${transition.eventType || 'always'}#${index}`);
        void event;
      }
    },
  });
  const visited: string[] = [];
  actor.start();
  for (const event of path.events) {
    if (event.type === 'tunnel.start') actor.send({ type: 'tunnel.start' });
    else if (event.type === 'tunnel.stop') signals.emit(event.signal!);
    else if (event.type === 'link.lost') transport.links.at(-1)!.lose('peer gone');
    else if (event.type === 'link.revoked') transport.links.at(-1)!.lose('access revoked', 'revoked');
    else if (event.type === 'command.exited') runner.commands.at(-1)!.exit(event.exit!.exitCode);
    else if (event.type.startsWith('xstate.after.reconnectBackoff')) clock.increment(30_000);
    else if (event.type.startsWith('xstate.after.')) clock.increment(timeoutMs);
    else if (event.type === 'xstate.done.actor.reconnect') {
      // A reconnect is signalling + ICE/DTLS again through the same transport.
      gates.open('negotiate');
      await flush();
      gates.open('establish');
    } else if (event.type === 'xstate.error.actor.reconnect') gates.fail('negotiate', event.error ?? actorErrors.reconnect);
    else if (event.type.startsWith('xstate.done.actor.')) gates.open(event.type.slice('xstate.done.actor.'.length));
    else if (event.type.startsWith('xstate.error.actor.')) {
      const id = event.type.slice('xstate.error.actor.'.length);
      gates.fail(id, actorErrors[id]);
    } else throw new Error(`no driver for ${event.type}`);
    await flush();
    visited.push(JSON.stringify(actor.getSnapshot().value));
  }
  const snapshot = actor.getSnapshot();
  if (snapshot.status !== 'done') throw new Error(`path ended in ${JSON.stringify(snapshot.value)}, not stopped`);
  if (signals.watching !== 0) throw new Error('signal handlers left installed after stop');
  return { exitCode: snapshot.output!.exitCode, visited };
}

t.test('every generated path replays to its expected exit code, covering every transition', async (t) => {
  const taken = new Set<string>();
  let pathCount = 0;
  for (const variant of variants) {
    const paths = generatePaths(variant.input);
    t.ok(paths.length > 0, `${variant.name}: paths generated`);
    for (const path of paths) {
      pathCount += 1;
      const label = `${variant.name}: ${path.events.map((e) => e.type.replace('xstate.', '')).join(' > ')}`;
      const result = await replay(variant, path, taken);
      t.same(result.visited, path.states, `${label}: actor follows the model's states`);
      t.equal(result.exitCode, oracle(variant, path), `${label}: exit code`);
    }
  }
  const defined = allTransitions(tunnelMachine as unknown as AnyStateMachine);
  const missed = [...defined].filter((transition) => !taken.has(transition));
  t.comment(
    `model-based: ${pathCount} paths replayed, ${defined.size - missed.length}/${defined.size} transitions taken (${((100 * (defined.size - missed.length)) / defined.size).toFixed(0)}%)`,
  );
  t.same(missed, [], 'every transition of the machine was taken by some path');
});
