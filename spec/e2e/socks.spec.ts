// SOCKS tunnels through real processes: curl through `pam tunnel start --socks` reaches an allowed
// target, forbidden destinations get their SOCKS reply code (curl's 97 and the raw reply byte), a name
// resolving to loopback is refused unless loopback is named literally, ::1 likewise, 200 concurrent
// connections carry their own bytes, and a gateway without --socks-allow refuses the tunnel (68).

import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { join } from 'node:path';
import t from 'tap';
import { echoServer, freePort, pam, scratchDir, sha256, startGatewayProc, tunnelEnv, type Teardownable } from '../support/processes.js';

const token = 'socks-spec-token-4d5e';

/** An HTTP server on 127.0.0.1 serving one random file at /file. */
async function fileServer(t: Teardownable): Promise<{ port: number; body: Buffer }> {
  const body = randomBytes(3 * 1024 * 1024 + 17);
  const server = createHttpServer((request, response) => {
    if (request.url !== '/file') return void response.writeHead(404).end();
    response.writeHead(200, { 'content-length': body.length }).end(body);
  });
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as AddressInfo).port, body };
}

async function echoOnIpv6Loopback(t: Teardownable): Promise<number> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.pipe(socket);
  });
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  );
  await new Promise<void>((resolve) => server.listen(0, '::1', resolve));
  return (server.address() as AddressInfo).port;
}

function curl(args: readonly string[]): Promise<{ code: number; stdout: Buffer; stderr: string }> {
  return new Promise((resolve) => {
    execFile('curl', ['-sS', '--max-time', '30', ...args], { encoding: 'buffer', maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) =>
      resolve({ code: error ? Number((error as { code?: unknown }).code ?? 1) : 0, stdout, stderr: stderr.toString() }),
    );
  });
}

type Address = { kind: 'name'; host: string } | { kind: 'ipv4'; host: string } | { kind: 'ipv6'; bytes: number[] };

/** A raw SOCKS5 client: greeting, CONNECT; resolves with the reply code and, once open, the socket. */
function socksConnect(proxyPort: number, address: Address, port: number): Promise<{ code: number; socket: Socket }> {
  return new Promise((resolve, reject) => {
    const socket = connect({ port: proxyPort, host: '127.0.0.1' });
    let buffered = Buffer.alloc(0);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('no SOCKS reply within 30 s'));
    }, 30_000);
    socket.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    const target =
      address.kind === 'name'
        ? [3, address.host.length, ...Buffer.from(address.host)]
        : address.kind === 'ipv4'
          ? [1, ...address.host.split('.').map(Number)]
          : [4, ...address.bytes];
    socket.write(Buffer.from([5, 1, 0, 5, 1, 0, ...target, port >> 8, port & 255]));
    const onData = (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      if (buffered.length < 12) return;
      clearTimeout(timer);
      socket.off('data', onData);
      if (buffered[0] !== 5 || buffered[1] !== 0) reject(new Error(`bad method reply ${[...buffered.subarray(0, 2)]}`));
      const rest = buffered.subarray(12);
      if (rest.length > 0) socket.unshift(rest);
      resolve({ code: buffered[3]!, socket });
    };
    socket.on('data', onData);
  });
}

/** Send `payload` over an open SOCKS stream to an echo server, read as many bytes back. */
function echoOver(socket: Socket, payload: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let received = 0;
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      received += chunk.length;
      if (received >= payload.length) {
        socket.end();
        resolve(Buffer.concat(chunks));
      }
    });
    socket.once('close', () => resolve(Buffer.concat(chunks)));
    socket.once('error', reject);
    socket.write(payload);
  });
}

const ipv6Loopback = [...Array(15).fill(0), 1];

t.test('a SOCKS tunnel through a gateway with --socks-allow', async (t) => {
  const dir = scratchDir(t);
  const files = await fileServer(t);
  const echo = await echoServer(t);
  const echo6 = await echoOnIpv6Loopback(t);
  const wildOnly = await echoServer(t);
  const closed = await freePort();
  const gateway = await startGatewayProc(t, dir, token, {}, [
    // Loopback targets are named literally: that is what the rule is for.
    ...['--socks-allow', `127.0.0.1:${files.port}`, '--socks-allow', `[::1]:${files.port}`],
    ...['--socks-allow', `127.0.0.1:${echo.port}`, '--socks-allow', `[::1]:${echo6}`, '--socks-allow', `127.0.0.1:${closed}`],
    // A wildcard never reaches loopback, whatever the name.
    ...['--socks-allow', `*:${wildOnly.port}`],
  ]);
  const env = tunnelEnv(dir, token, gateway.url);
  const tunnel = pam(t, ['tunnel', 'start', '--socks', '-fg', '--json'], { env });
  const ready = await tunnel.event('ready', 60_000);
  t.match(ready, { target: '@socks', socks: true, mode: 'foreground' }, 'the ready line says SOCKS');
  const proxy = `127.0.0.1:${Number(ready.port)}`;

  await t.test('curl --socks5-hostname reaches the allowed target, by name and by address', async (t) => {
    const byName = await curl(['--socks5-hostname', proxy, `http://localhost:${files.port}/file`]);
    t.equal(byName.code, 0, byName.stderr);
    t.equal(sha256(byName.stdout), sha256(files.body), 'the file arrived byte for byte (name resolved by the gateway)');
    const byAddress = await curl(['--socks5-hostname', proxy, `http://127.0.0.1:${files.port}/file`]);
    t.equal(sha256(byAddress.stdout), sha256(files.body), 'and by address');
  });

  await t.test('a forbidden destination is refused with reply 2 (curl exit 97)', async (t) => {
    const refused = await curl(['--socks5-hostname', proxy, `http://127.0.0.1:${wildOnly.port}/`]);
    t.equal(refused.code, 97, `curl reports a SOCKS refusal: ${refused.stderr}`);
    t.match(refused.stderr, /\(2\)/, 'with code 2');
    t.equal((await socksConnect(Number(ready.port), { kind: 'ipv4', host: '127.0.0.1' }, wildOnly.port)).code, 2);
    t.equal((await socksConnect(Number(ready.port), { kind: 'ipv4', host: '127.0.0.1' }, files.port + 1)).code, 2, 'a port no rule names');
    t.equal(wildOnly.connections, 0, 'the target was never dialled');
  });

  await t.test('a name resolving to loopback is refused unless loopback is named literally', async (t) => {
    const viaName = await socksConnect(Number(ready.port), { kind: 'name', host: 'localhost' }, wildOnly.port);
    t.equal(viaName.code, 2, "`*:PORT` does not reach localhost's 127.0.0.1");
    t.equal(wildOnly.connections, 0);
    await until(
      () => gateway.proc.stderr.includes(`CONNECT localhost:${wildOnly.port} refused (reply 2)`),
      'the refusal in the gateway log',
    );
    t.match(gateway.proc.stderr, /localhost resolves to 127\.0\.0\.1, which is in 127\.0\.0\.0\/8/, 'the log says why');
  });

  await t.test('IPv6 loopback: refused unless allowed, carried when allowed', async (t) => {
    t.equal((await socksConnect(Number(ready.port), { kind: 'ipv6', bytes: ipv6Loopback }, wildOnly.port)).code, 2, '[::1] by wildcard');
    const allowed = await socksConnect(Number(ready.port), { kind: 'ipv6', bytes: ipv6Loopback }, echo6);
    t.equal(allowed.code, 0, '[::1] named literally');
    const payload = randomBytes(64 * 1024);
    t.equal(sha256(await echoOver(allowed.socket, payload)), sha256(payload));
  });

  await t.test('a closed port is reply 5, connection refused', async (t) => {
    t.equal((await socksConnect(Number(ready.port), { kind: 'ipv4', host: '127.0.0.1' }, closed)).code, 5);
    const viaCurl = await curl(['--socks5-hostname', proxy, `http://127.0.0.1:${closed}/`]);
    t.equal(viaCurl.code, 97);
    t.match(viaCurl.stderr, /\(5\)/);
  });

  await t.test('200 concurrent SOCKS connections, each echoed intact', async (t) => {
    const results = await Promise.all(
      Array.from({ length: 200 }, async () => {
        const payload = randomBytes(32 * 1024);
        try {
          const opened = await socksConnect(Number(ready.port), { kind: 'ipv4', host: '127.0.0.1' }, echo.port);
          if (opened.code !== 0) return false;
          return sha256(await echoOver(opened.socket, payload)) === sha256(payload);
        } catch {
          return false;
        }
      }),
    );
    t.equal(results.filter(Boolean).length, 200, 'every connection got its own bytes back');
  });

  tunnel.child.kill('SIGTERM');
  t.equal(await tunnel.exited, 0, 'the tunnel stops cleanly');
});

t.test('--run gets ALL_PROXY; -bg and list show the tunnel as SOCKS', async (t) => {
  const dir = scratchDir(t);
  const files = await fileServer(t);
  const gateway = await startGatewayProc(t, dir, token, {}, ['--socks-allow', `127.0.0.1:${files.port}`]);
  const env = tunnelEnv(dir, token, gateway.url);
  const out = join(dir, 'fetched');
  const run = pam(
    t,
    ['tunnel', 'start', '--socks', '--run', `test -n "$PAM_TUNNEL_PORT" && curl -sS -o '${out}' http://127.0.0.1:${files.port}/file`],
    { env },
  );
  t.equal(await run.exited, 0, run.stderr);
  t.equal(sha256(readFileSync(out)), sha256(files.body), 'curl used ALL_PROXY=socks5h://… and fetched the file');

  const launcher = pam(t, ['tunnel', 'start', '--socks', '-bg', '--json'], { env });
  t.equal(await launcher.exited, 0, launcher.stderr);
  const launched = JSON.parse(launcher.stdout) as { id: string; pid: number; port: number };
  t.teardown(() => {
    try {
      process.kill(launched.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  });
  const list = pam(t, ['tunnel', 'list', '--json'], { env });
  t.equal(await list.exited, 0);
  t.match(JSON.parse(list.stdout), [{ id: launched.id, target: '@socks', socks: true, mode: 'background' }]);
  const fetched = await curl(['--socks5-hostname', `127.0.0.1:${launched.port}`, `http://127.0.0.1:${files.port}/file`]);
  t.equal(sha256(fetched.stdout), sha256(files.body), 'the background SOCKS tunnel carries too');
  const stop = pam(t, ['tunnel', 'stop', launched.id], { env });
  t.equal(await stop.exited, 0, stop.stderr);
});

t.test('a key\'s socks="…" grant narrows --socks-allow; a key without one is refused (77)', async (t) => {
  const dir = scratchDir(t);
  const files = await fileServer(t);
  const echo = await echoServer(t);
  const keygen = async (name: string) => {
    const file = join(dir, 'keys', name);
    const made = pam(t, ['keygen', '--file', file, '--comment', name], { env: tunnelEnv(dir, token) });
    t.equal(await made.exited, 0, made.stderr);
    return { file, line: made.stdout.trim() };
  };
  const alice = await keygen('alice');
  const bob = await keygen('bob');
  const grants = join(dir, 'authorized_keys');
  writeFileSync(grants, `socks="127.0.0.1:${files.port}" ${alice.line}\ntargets="echo" ${bob.line}\n`);
  const gateway = await startGatewayProc(t, dir, token, { echo: echo.port }, [
    ...['--authorized-keys', grants, '--socks-allow', `127.0.0.1:${files.port}`, '--socks-allow', `127.0.0.1:${echo.port}`],
  ]);
  const env = { ...tunnelEnv(dir, token, gateway.url), PAM_GATEWAY_TOKEN: undefined };
  const tunnel = pam(t, ['tunnel', 'start', '--socks', '-fg', '--json'], { env: { ...env, PAM_KEY_FILE: alice.file } });
  const port = Number((await tunnel.event('ready', 60_000)).port);
  const fetched = await curl(['--socks5-hostname', `127.0.0.1:${port}`, `http://127.0.0.1:${files.port}/file`]);
  t.equal(sha256(fetched.stdout), sha256(files.body), 'the granted destination is reached');
  t.equal(
    (await socksConnect(port, { kind: 'ipv4', host: '127.0.0.1' }, echo.port)).code,
    2,
    '--socks-allow alone is not enough for a key',
  );
  t.equal(echo.connections, 0);
  tunnel.child.kill('SIGTERM');
  t.equal(await tunnel.exited, 0);
  const refused = pam(t, ['tunnel', 'start', '--socks', '-fg'], { env: { ...env, PAM_KEY_FILE: bob.file } });
  t.equal(await refused.exited, 77, refused.stderr);
  t.match(refused.stderr, /has no socks="…" grant/);
});

t.test('a gateway without --socks-allow refuses SOCKS tunnels: 68, saying so', async (t) => {
  const dir = scratchDir(t);
  const echo = await echoServer(t);
  const gateway = await startGatewayProc(t, dir, token, { echo: echo.port });
  const tunnel = pam(t, ['tunnel', 'start', '--socks', '-fg'], { env: tunnelEnv(dir, token, gateway.url) });
  t.equal(await tunnel.exited, 68, tunnel.stderr);
  t.match(tunnel.stderr, /does not serve SOCKS tunnels.*--socks-allow/);
  t.match(gateway.proc.stderr, /refused a SOCKS tunnel/);
});

t.test('bad --socks-allow rules and a target with --socks are usage errors', async (t) => {
  const dir = scratchDir(t);
  const gateway = pam(t, ['gateway', '--listen', '127.0.0.1:0', '--socks-allow', '10.0.0.0/33:22'], { env: tunnelEnv(dir, token) });
  t.equal(await gateway.exited, 2);
  t.match(gateway.stderr, /--socks-allow '10\.0\.0\.0\/33:22': prefix \/33 is out of range/);
  const both = pam(t, ['tunnel', 'start', 'db', '--socks'], { env: tunnelEnv(dir, token, 'http://127.0.0.1:9') });
  t.equal(await both.exited, 2);
  t.match(both.stderr, /--socks takes no target/);
});

async function until(probe: () => boolean, what: string): Promise<void> {
  for (let waited = 0; !probe(); waited += 50) {
    if (waited > 10_000) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
