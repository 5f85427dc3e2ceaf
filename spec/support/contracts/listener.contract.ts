// ListenerFactory contract: free-port binding, busy ports refused with kind portBusy, connections
// handed over only after accept(), port released by close().

import type { TapTest } from '../tap.js';
import type { ListenerFactory, LocalListener } from '../../../machines/ports.js';

export function listenerContract<C>(
  t: TapTest,
  name: string,
  make: () => ListenerFactory<C>,
  connect: (listener: LocalListener<C>) => Promise<void>,
): void {
  t.test(`${name}: port 0 binds a free port; that port is then busy until closed`, async (t) => {
    const factory = make();
    const listener = await factory.bind('127.0.0.1', 0);
    t.teardown(() => listener.close());
    t.ok(listener.port > 0, `bound port ${listener.port}`);
    t.equal(listener.host, '127.0.0.1');
    const refused = await factory.bind('127.0.0.1', listener.port).then(
      () => 'bound twice',
      (error: { kind?: string }) => error.kind,
    );
    t.equal(refused, 'portBusy', 'a held port is refused as portBusy');
    await listener.close();
    const again = await factory.bind('127.0.0.1', listener.port);
    t.equal(again.port, listener.port, 'the port is free again after close');
    await again.close();
  });

  t.test(`${name}: a connection made before accept() is handed over once accept() is called`, async (t) => {
    const listener = await make().bind('127.0.0.1', 0);
    t.teardown(() => listener.close());
    await connect(listener);
    let handed = 0;
    listener.accept(() => (handed += 1));
    for (let i = 0; i < 100 && handed === 0; i += 1) await new Promise((resolve) => setTimeout(resolve, 10));
    t.equal(handed, 1);
  });

  t.test(`${name}: accept(undefined) holds new connections until accept() is called again`, async (t) => {
    const listener = await make().bind('127.0.0.1', 0);
    t.teardown(() => listener.close());
    const handed: unknown[] = [];
    listener.accept((connection) => handed.push(connection));
    listener.accept(undefined);
    await connect(listener);
    await new Promise((resolve) => setTimeout(resolve, 50));
    t.equal(handed.length, 0, 'held while the link is away');
    listener.accept((connection) => handed.push(connection));
    for (let i = 0; i < 100 && handed.length === 0; i += 1) await new Promise((resolve) => setTimeout(resolve, 10));
    t.equal(handed.length, 1, 'handed over once accepting again');
  });
}
