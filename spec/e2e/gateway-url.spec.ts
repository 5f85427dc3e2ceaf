// The gateway URL as given: a path prefix is kept (a gateway behind a path-prefix proxy), errors show
// the whole URL, a bracketed IPv6 --host binds and prints as [::1]:port, and one connect's key request
// and offer travel on one TCP connection.

import { createServer, request } from 'node:http';
import { connect, createServer as createTcpServer, type AddressInfo, type Socket } from 'node:net';
import t from 'tap';
import { echoServer, pam, scratchDir, startGatewayProc, tunnelEnv, type Teardownable } from '../support/processes.js';

const token = 'gateway-url-token-3c4d';

/** A reverse proxy on 127.0.0.1 serving the gateway under /pam/ only; records every path asked for. */
async function prefixProxy(t: Teardownable, gatewayPort: number): Promise<{ url: string; paths: string[] }> {
  const paths: string[] = [];
  const server = createServer((incoming, outgoing) => {
    const path = incoming.url ?? '';
    paths.push(path);
    if (!path.startsWith('/pam/')) {
      incoming.resume();
      outgoing.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'no such prefix' }));
      return;
    }
    const upstream = request(
      { host: '127.0.0.1', port: gatewayPort, method: incoming.method, path: path.slice('/pam'.length), headers: incoming.headers },
      (answer) => {
        outgoing.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(outgoing);
      },
    );
    upstream.on('error', () => outgoing.writeHead(502).end());
    incoming.pipe(upstream);
  });
  t.teardown(() => new Promise<void>((resolveClose) => server.close(() => resolveClose())));
  await new Promise<void>((resolveListen) => server.listen(0, '127.0.0.1', resolveListen));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, paths };
}

t.test('a gateway behind a path-prefix proxy is reached under its prefix; errors name the whole URL', async (t) => {
  const dir = scratchDir(t);
  const echo = await echoServer(t);
  const gateway = await startGatewayProc(t, dir, token, { echo: echo.port });
  const proxy = await prefixProxy(t, gateway.port);
  const env = tunnelEnv(dir, token);
  const run = pam(t, ['tunnel', 'start', 'echo', '--gateway', `${proxy.url}/pam/`, '-R', 'exit 7'], { env });
  t.equal(await run.exited, 7, `the command ran through the proxied gateway: ${run.stderr.trim()}`);
  t.ok(proxy.paths.includes('/pam/v1/tunnels'), `the signalling request kept the prefix: ${proxy.paths.join(' ')}`);
  const wrong = pam(t, ['tunnel', 'start', 'echo', '--gateway', `${proxy.url}/elsewhere`, '-R', 'true'], { env });
  t.equal(await wrong.exited, 69);
  t.match(wrong.stderr, new RegExp(`gateway ${proxy.url}/elsewhere answered HTTP 404`), `the full URL: ${wrong.stderr.trim()}`);
});

t.test('--host [::1] binds ::1 and the address is printed in brackets', async (t) => {
  const dir = scratchDir(t);
  const echo = await echoServer(t);
  const gateway = await startGatewayProc(t, dir, token, { echo: echo.port });
  const run = pam(t, ['tunnel', 'start', 'echo', '--host', '[::1]', '-R', 'printf %s "$PAM_TUNNEL_HOST"'], {
    env: tunnelEnv(dir, token, gateway.url),
  });
  t.equal(await run.exited, 0, run.stderr.trim());
  t.equal(run.stdout, '::1', 'the command gets the bare address');
  t.match(run.stderr, /listening on \[::1\]:\d+ → echo/);
});

t.test("one connect's key request and sealed offer share one TCP connection to the gateway", async (t) => {
  const dir = scratchDir(t);
  const echo = await echoServer(t);
  const gateway = await startGatewayProc(t, dir, token, { echo: echo.port });
  // A byte-level relay in front of the gateway that counts the connections it accepts.
  let connections = 0;
  const sockets = new Set<Socket>();
  const relay = createTcpServer((incoming) => {
    connections += 1;
    const upstream = connect(gateway.port, '127.0.0.1');
    for (const socket of [incoming, upstream]) {
      sockets.add(socket);
      socket.on('error', () => undefined);
      socket.on('close', () => sockets.delete(socket));
    }
    incoming.pipe(upstream).pipe(incoming);
  });
  t.teardown(() => {
    for (const socket of sockets) socket.destroy();
    return new Promise<void>((resolveClose) => relay.close(() => resolveClose()));
  });
  await new Promise<void>((resolveListen) => relay.listen(0, '127.0.0.1', resolveListen));
  const url = `http://127.0.0.1:${(relay.address() as AddressInfo).port}`;
  const run = pam(t, ['tunnel', 'start', 'echo', '-R', 'exit 0'], { env: tunnelEnv(dir, token, url) });
  t.equal(await run.exited, 0, `the tunnel connected through the relay: ${run.stderr.trim()}`);
  t.equal(connections, 1, 'GET /v1/key and POST /v1/tunnels on one connection: one handshake, one round trip fewer');
});
