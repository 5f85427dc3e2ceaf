// The owner's control channel: a 0600 unix socket answering stop requests for the tunnels it owns.

import { statSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { createControlClient, openControlServer } from '../../adapters/control-channel.js';
import { scratchDir } from '../support/processes.js';

t.test('stop requests reach the owner; unknown ids and dead sockets fail with a reason', async (t) => {
  const socketPath = join(scratchDir(t), 'control.sock');
  const stopped: string[] = [];
  const server = await openControlServer(socketPath, (id) => {
    if (id !== '0000abcd') return false;
    stopped.push(id);
    return true;
  });
  t.teardown(() => server.close());
  t.equal(statSync(socketPath).mode & 0o777, 0o600, 'socket is 0600');
  const client = createControlClient(2_000);
  await client.stopTunnel(socketPath, '0000abcd');
  t.same(stopped, ['0000abcd'], 'the owner was asked to stop exactly that tunnel');
  await t.rejects(client.stopTunnel(socketPath, 'ffffffff'), { kind: 'generic', message: /no tunnel ffffffff here/ });
  await server.close();
  await t.rejects(client.stopTunnel(socketPath, '0000abcd'), { kind: 'generic', message: /cannot reach the owner's control channel/ });
});
