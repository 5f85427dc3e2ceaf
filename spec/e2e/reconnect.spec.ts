// A tunnel outlives its gateway's restart: the link is re-established with backoff while the local
// port stays bound, new connections work again, `list` shows the reconnect; a gateway that stays down
// ends the tunnel with 69 and the reason.

import t from 'tap';
import { echoServer, freePort, pam, portIsOpen, roundTrip, scratchDir, tunnelEnv, until, type Teardownable } from '../support/processes.js';

const token = 'reconnect-token-5e77';

function gatewayAt(t: Teardownable, port: number, echoPort: number, env: NodeJS.ProcessEnv) {
  return pam(t, ['gateway', '--listen', `127.0.0.1:${port}`, '--json', '--target', `echo=127.0.0.1:${echoPort}`], { env });
}

/** An echo target behind a gateway on a fixed port (so it can be restarted there), already listening. */
async function restartableGateway(t: Teardownable) {
  const dir = scratchDir(t);
  const echo = await echoServer(t);
  const port = await freePort();
  // A short keepalive so a dead gateway is noticed in seconds (default 15 s).
  const env = { ...tunnelEnv(dir, token, `http://127.0.0.1:${port}`), PAM_KEEPALIVE_TIMEOUT: '2' };
  const first = gatewayAt(t, port, echo.port, env);
  await first.event('listening');
  return { dir, env, first, restart: () => gatewayAt(t, port, echo.port, env) };
}

t.test('gateway killed and restarted: the tunnel reconnects and carries new connections', async (t) => {
  const { env, first, restart } = await restartableGateway(t);
  const tunnel = pam(t, ['tunnel', 'start', 'echo', '-fg', '--json', '--reconnect-attempts', '10'], { env });
  const ready = await tunnel.event('ready');
  const local = Number(ready.port);
  t.same(await roundTrip(local, Buffer.from('before')), Buffer.from('before'));

  first.child.kill('SIGKILL');
  await first.exited;
  await tunnel.line(/tunnel lost \(.*\); reconnecting/, 20_000);
  t.ok(await portIsOpen(local), 'the local port stays bound while reconnecting');
  const listed = pam(t, ['tunnel', 'list', '--json'], { env });
  await listed.exited;
  t.match(JSON.parse(listed.stdout), [{ state: 'reconnecting' }], 'list shows the tunnel reconnecting');

  const second = restart();
  await second.event('listening');
  await tunnel.line(/reconnected/, 60_000);
  t.same(await roundTrip(local, Buffer.from('after')), Buffer.from('after'), 'new connections work after the reconnect');
  await until(
    async () => {
      const again = pam(t, ['tunnel', 'list', '--json'], { env });
      await again.exited;
      const [row] = JSON.parse(again.stdout) as Array<{ state: string; reconnects: number }>;
      return row?.state === 'ready' && row.reconnects === 1;
    },
    10_000,
    'list to show ready with 1 reconnect',
  );
  tunnel.child.kill('SIGTERM');
  t.equal(await tunnel.exited, 0);
});

t.test('a gateway that stays down: reconnects run out and the tunnel ends with 69 and the reason', async (t) => {
  const { env, first: gateway } = await restartableGateway(t);
  const tunnel = pam(t, ['tunnel', 'start', 'echo', '-fg', '--json', '--reconnect-attempts', '2', '--timeout', '3'], { env });
  const local = Number((await tunnel.event('ready')).port);
  gateway.child.kill('SIGKILL');
  t.equal(await tunnel.exited, 69);
  t.match(
    tunnel.stdout,
    /"event":"stopped".*"exitCode":69.*tunnel lost \(.*\); 2 reconnect attempt\(s\) failed, last: gateway http:\/\/127\.0\.0\.1:\d+ is unreachable/,
  );
  t.notOk(await portIsOpen(local), 'port released');
});

t.test('--run: the command keeps running through a reconnect and its code is kept', async (t) => {
  const { dir, env, first, restart } = await restartableGateway(t);
  const node = JSON.stringify(process.execPath);
  // The command waits for a file, then talks through the tunnel and exits 9.
  const flag = `${dir}/go`;
  const script = `while [ ! -f ${flag} ]; do sleep 0.1; done; ${node} -e 'const s=require("net").connect(+process.env.PAM_TUNNEL_PORT,"127.0.0.1",()=>s.write("x"));s.on("data",()=>{process.exit(9)})'`;
  const tunnel = pam(t, ['tunnel', 'start', 'echo', '--json', '-R', script], { env });
  await tunnel.event('ready');
  first.child.kill('SIGKILL');
  await tunnel.line(/reconnecting/, 20_000);
  const second = restart();
  await second.event('listening');
  await tunnel.line(/reconnected/, 60_000);
  const { writeFileSync } = await import('node:fs');
  writeFileSync(flag, '');
  t.equal(await tunnel.exited, 9, "the command's exit code after a reconnect");
});
