// DiagnosePorts contract (the checks of `pam tunnel diagnose`), against a "world" the harness sets up:
// a reachable gateway and a dead URL, a STUN/TURN server with good and bad credentials. The real
// adapter meets it with an in-process gateway and coturn on loopback; the fake with its own map.

import type { DiagnosePorts, StunServerRef, TurnServerRef } from '../../../machines/diagnose.js';
import type { TapTest } from '../tap.js';

export interface DiagnoseWorld {
  readonly ports: DiagnosePorts & { close(): void };
  /** A gateway that answers, and its key's fingerprint. */
  readonly gatewayUrl: string;
  readonly fingerprint: string;
  /** Nothing listens there. */
  readonly deadUrl: string;
  readonly stun: StunServerRef;
  readonly turn: TurnServerRef;
  /** The same server, a wrong credential. */
  readonly badTurn: TurnServerRef;
}

export function diagnoseContract(t: TapTest, name: string, make: (t: TapTest) => Promise<DiagnoseWorld>): void {
  t.test(`${name}: reach and site of a running gateway; a dead URL fails as gatewayUnreachable naming it`, async (t) => {
    const world = await make(t);
    t.teardown(() => world.ports.close());
    t.match(await world.ports.reach(world.gatewayUrl), /answers/);
    t.match(await world.ports.site(world.gatewayUrl), { broker: false, fingerprint: world.fingerprint });
    await t.rejects(world.ports.reach(world.deadUrl), { kind: 'gatewayUnreachable', message: /unreachable/ });
    await t.rejects(world.ports.site(world.deadUrl), { kind: 'gatewayUnreachable', message: /unreachable/ });
  });

  t.test(`${name}: STUN Binding maps a socket to one address; TURN allocates with the right credential only`, async (t) => {
    const world = await make(t);
    t.teardown(() => world.ports.close());
    const first = await world.ports.stunBinding(world.stun, 0);
    t.ok(first.port > 0, `mapped ${first.address}:${first.port}`);
    t.same(await world.ports.stunBinding(world.stun, 0), first, 'the same socket maps to the same address');
    t.not((await world.ports.stunBinding(world.stun, 1)).port, first.port, 'another socket, another port');
    const relayed = await world.ports.turnAllocate(world.turn);
    t.ok(relayed.port > 0, `relayed ${relayed.address}:${relayed.port}`);
    await t.rejects(world.ports.turnAllocate(world.badTurn), /401|refused/);
  });
}
