// Registry contract, run against the fs registry and the memory fake: two owners see each other,
// entries go when their last tunnel does, and an owner that died or whose pid was reused is stale.

import type { TapTest } from '../tap.js';
import type { Registry, TunnelRecord } from '../../../machines/ports.js';

export interface RegistryWorld {
  /** A registry owned by a live process. */
  readonly alive: Registry;
  /** Another live owner's registry on the same store. */
  readonly other: Registry;
  /** A registry whose owner dies when `kill()` is called. */
  readonly doomed: Registry;
  readonly doomedPid: number;
  kill(): Promise<void>;
  /** A registry whose recorded start time does not match the live process with its pid. */
  readonly impostor: Registry;
  readonly impostorPid: number;
}

export const record = (id: string, port: number, extra: Partial<TunnelRecord> = {}): TunnelRecord => ({
  id,
  target: 'db',
  gateway: 'http://127.0.0.1:8765',
  host: '127.0.0.1',
  port,
  mode: 'background',
  state: 'ready',
  reconnects: 0,
  startedAt: '2026-11-24T10:00:00.000Z',
  ...extra,
});

export function registryContract(t: TapTest, name: string, make: (t: TapTest) => Promise<RegistryWorld>): void {
  t.test(`${name}: put, replace by id, and remove round-trip; two owners see each other`, async (t) => {
    const world = await make(t);
    await world.alive.put(record('0000000a', 1001, { state: 'connecting' }));
    await world.alive.put(record('0000000a', 1001));
    await world.alive.put(record('0000000b', 1002));
    await world.other.put(record('0000000c', 1003));
    const seen = await world.other.entries();
    t.equal(seen.length, 2, 'two owners');
    const mine = seen.find((entry) => entry.tunnels.some((tunnel) => tunnel.id === '0000000a'));
    t.same(
      mine?.tunnels.map((tunnel) => [tunnel.id, tunnel.state]),
      [
        ['0000000a', 'ready'],
        ['0000000b', 'ready'],
      ],
      'put replaces by id',
    );
    t.ok(mine && (await world.other.isLive(mine)), 'a live owner is live');
    await world.alive.remove('0000000a');
    await world.alive.remove('0000000b');
    const after = await world.other.entries();
    t.same(
      after.flatMap((entry) => entry.tunnels.map((tunnel) => tunnel.id)),
      ['0000000c'],
      'an owner without tunnels has no entry',
    );
  });

  t.test(`${name}: a dead owner and a reused pid are stale, not listed`, async (t) => {
    const world = await make(t);
    await world.doomed.put(record('0000000d', 1004));
    await world.impostor.put(record('0000000e', 1005));
    const before = await world.alive.entries();
    t.same(
      before.map((entry) => entry.pid),
      [world.doomedPid],
      'the doomed owner is listed while alive; the impostor never',
    );
    await world.kill();
    t.same(await world.alive.entries(), [], 'after its death nothing is listed');
    t.notOk(await world.alive.isLive(before[0]!), 'and isLive says so');
  });
}
