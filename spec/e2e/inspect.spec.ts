// --inspect streams the live actor to a websocket (standing in for the Stately inspector), never
// holds up readiness, and never keeps pam alive once the tunnel stopped, even with the server gone.

import type { AddressInfo } from 'node:net';
import t from 'tap';
import { WebSocketServer } from 'ws';
import { echoServer, freePort, pam, scratchDir, startGatewayProc, tunnelEnv, until } from '../support/processes.js';

const token = 'inspect-token-c0de';

t.test('snapshots of the tunnel actor reach the inspector; pam exits after stop without it', async (t) => {
  const dir = scratchDir(t);
  const echo = await echoServer(t);
  const gateway = await startGatewayProc(t, dir, token, { echo: echo.port });
  const env = tunnelEnv(dir, token, gateway.url);

  const server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  let closed = false;
  const closeServer = () =>
    new Promise<void>((resolve) => {
      if (closed) return resolve();
      closed = true;
      for (const client of server.clients) client.terminate();
      server.close(() => resolve());
    });
  t.teardown(closeServer);
  const received: Array<{ type?: string; snapshot?: { value?: unknown; context?: Record<string, unknown> }; event?: { type?: string } }> =
    [];
  const raw: string[] = [];
  server.on('connection', (socket) =>
    socket.on('message', (data) => {
      raw.push(String(data));
      received.push(JSON.parse(String(data)));
    }),
  );
  const url = `ws://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const tunnel = pam(t, ['tunnel', 'start', 'echo', '-fg', '--json', `--inspect=${url}`], { env });
  await tunnel.event('ready');
  await until(
    () =>
      received.some(
        (event) => event.type === '@xstate.snapshot' && JSON.stringify(event.snapshot?.value) === '{"ready":{"serving":"linked"}}',
      ),
    10_000,
    'a ready snapshot at the inspector',
  );
  t.ok(
    received.some((event) => event.type === '@xstate.actor'),
    'the actor was announced',
  );
  const ready = received.find((event) => JSON.stringify(event.snapshot?.value) === '{"ready":{"serving":"linked"}}')!;
  t.match(ready.snapshot?.context, { listener: { host: '127.0.0.1' }, link: '[link]' }, 'live handles are described, not serialized');
  t.notMatch(
    raw.join('\n'),
    new RegExp(`${token}|a=ice-pwd|PRIVATE KEY|localPassword`),
    'no token, key or ICE credential reaches the inspector',
  );

  await closeServer(); // the inspector goes away; pam must not care
  tunnel.child.kill('SIGTERM');
  const code = await Promise.race([
    tunnel.exited,
    new Promise<string>((resolve) => setTimeout(() => resolve('still running after 10 s'), 10_000)),
  ]);
  t.equal(code, 0, 'pam exits after stop with the inspector gone');
});

t.test('an inspector that is not there never delays or blocks a --run tunnel', async (t) => {
  const dir = scratchDir(t);
  const echo = await echoServer(t);
  const gateway = await startGatewayProc(t, dir, token, { echo: echo.port });
  const nobody = `ws://127.0.0.1:${await freePort()}`;
  const run = pam(t, ['tunnel', 'start', 'echo', '-R', 'exit 5'], { env: { ...tunnelEnv(dir, token, gateway.url), PAM_INSPECT: nobody } });
  const code = await Promise.race([
    run.exited,
    new Promise<string>((resolve) => setTimeout(() => resolve('still running after 15 s'), 15_000)),
  ]);
  t.equal(code, 5, "the command's code, promptly, with PAM_INSPECT pointing at nothing");
  t.match(run.stderr, new RegExp(`inspector: streaming this tunnel to ${nobody}`));
});

t.test("pam shell --inspect streams the session's tunnels", async (t) => {
  const dir = scratchDir(t);
  const echo = await echoServer(t);
  const gateway = await startGatewayProc(t, dir, token, { echo: echo.port });
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        for (const client of server.clients) client.terminate();
        server.close(() => resolve());
      }),
  );
  const values: string[] = [];
  server.on('connection', (socket) =>
    socket.on('message', (data) => {
      const event = JSON.parse(String(data)) as { type?: string; snapshot?: { value?: unknown } };
      if (event.type === '@xstate.snapshot') values.push(JSON.stringify(event.snapshot?.value));
    }),
  );
  const url = `ws://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const shell = pam(t, ['shell', `--inspect=${url}`], { env: tunnelEnv(dir, token, gateway.url), stdin: 'pipe' });
  shell.child.stdin!.write('tunnel start echo --json\n');
  await shell.event('ready');
  await until(() => values.includes('{"ready":{"serving":"linked"}}'), 10_000, 'the shell tunnel at the inspector');
  shell.child.stdin!.end();
  t.equal(await shell.exited, 0);
});
