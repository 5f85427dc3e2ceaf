// End to end with real processes: `pam gateway` + `pam tunnel start --foreground` carry bytes between
// a local port and a real TCP target over WebRTC, and the failure exit codes hold.

import { createHash, randomBytes } from 'node:crypto';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import t from 'tap';
import {
  freePort,
  halfCloseExchange,
  pam,
  portIsOpen,
  scratchDir,
  startGatewayProc,
  tunnelEnv,
  type Teardownable,
} from '../support/processes.js';

const token = 'skeleton-token-7f3a';

/** A target that hashes what it receives until the client's FIN, then answers with its own payload. */
async function hashingTarget(t: Teardownable, reply: Buffer): Promise<{ port: number; received: Promise<string> }> {
  let resolveReceived!: (digest: string) => void;
  const received = new Promise<string>((resolve) => (resolveReceived = resolve));
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    const hash = createHash('sha256');
    socket.on('data', (chunk) => hash.update(chunk));
    socket.on('end', () => {
      resolveReceived(hash.digest('hex'));
      socket.end(reply);
    });
    socket.on('error', () => undefined);
  });
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as AddressInfo).port, received };
}

t.test('10 MiB each way through a foreground tunnel, sha256-equal; SIGTERM → exit 0 and the port closes', async (t) => {
  const dir = scratchDir(t);
  const upload = randomBytes(10 * 1024 * 1024);
  const download = randomBytes(10 * 1024 * 1024 + 17);
  const target = await hashingTarget(t, download);
  const gateway = await startGatewayProc(t, dir, token, { files: target.port });

  const tunnel = pam(t, ['tunnel', 'start', 'files', '--foreground', '--json', '--gateway', gateway.url], { env: tunnelEnv(dir, token) });
  const ready = await tunnel.event('ready');
  const port = Number(ready.port);
  t.ok(port > 0, `tunnel announced local port ${port}`);
  t.equal(ready.host, '127.0.0.1', 'binds loopback by default');

  const downloaded = await halfCloseExchange(port, upload);
  t.equal(await target.received, createHash('sha256').update(upload).digest('hex'), 'target received the upload byte for byte');
  t.equal(downloaded.length, download.length, 'client received every byte of the download');
  t.equal(
    createHash('sha256').update(downloaded).digest('hex'),
    createHash('sha256').update(download).digest('hex'),
    'download sha256 matches',
  );

  tunnel.child.kill('SIGTERM');
  t.equal(await tunnel.exited, 0, 'SIGTERM ends a foreground tunnel with exit 0');
  t.notOk(await portIsOpen(port), 'local port is closed after stop');
  t.match(tunnel.stdout, /"event":"stopped".*"reason":"stopped by SIGTERM"/, 'stopped line says why');
});

t.test('--transport werift on both ends carries the same 10 MiB each way', async (t) => {
  const dir = scratchDir(t);
  const upload = randomBytes(10 * 1024 * 1024);
  const download = randomBytes(10 * 1024 * 1024 + 5);
  const target = await hashingTarget(t, download);
  const gateway = await startGatewayProc(t, dir, token, { files: target.port }, ['--transport', 'werift']);
  const tunnel = pam(t, ['tunnel', 'start', 'files', '--foreground', '--json', '--transport', 'werift', '--gateway', gateway.url], {
    env: tunnelEnv(dir, token),
  });
  const port = Number((await tunnel.event('ready')).port);
  const downloaded = await halfCloseExchange(port, upload);
  t.equal(await target.received, createHash('sha256').update(upload).digest('hex'), 'upload intact');
  t.equal(createHash('sha256').update(downloaded).digest('hex'), createHash('sha256').update(download).digest('hex'), 'download intact');
  tunnel.child.kill('SIGTERM');
  t.equal(await tunnel.exited, 0);
});

t.test('a wrong token exits 77 and names the fix', async (t) => {
  const dir = scratchDir(t);
  const target = await hashingTarget(t, Buffer.alloc(0));
  const gateway = await startGatewayProc(t, dir, token, { web: target.port });
  const tunnel = pam(t, ['tunnel', 'start', 'web', '--gateway', gateway.url], {
    env: { ...tunnelEnv(dir, token), PAM_GATEWAY_TOKEN: 'wrong-token' },
  });
  t.equal(await tunnel.exited, 77);
  t.match(tunnel.stderr, /refused the token.*PAM_GATEWAY_TOKEN/);
  t.notMatch(tunnel.stderr, /\n\s+at /, 'no stack trace for a user error');
});

t.test('an unknown target exits 68', async (t) => {
  const dir = scratchDir(t);
  const target = await hashingTarget(t, Buffer.alloc(0));
  const gateway = await startGatewayProc(t, dir, token, { web: target.port });
  const tunnel = pam(t, ['tunnel', 'start', 'nosuch', '--gateway', gateway.url], { env: tunnelEnv(dir, token) });
  t.equal(await tunnel.exited, 68);
  t.match(tunnel.stderr, /nosuch/);
});

t.test('a gateway that is down exits 69 and leaves no port or registry entry behind', async (t) => {
  const dir = scratchDir(t);
  const port = await freePort();
  const local = await freePort();
  const tunnel = pam(t, ['tunnel', 'start', 'web', '--port', String(local), '--gateway', `http://127.0.0.1:${port}`], {
    env: tunnelEnv(dir, token),
  });
  t.equal(await tunnel.exited, 69);
  t.match(tunnel.stderr, /unreachable/);
  t.notOk(await portIsOpen(local), 'local port released');
});

t.test('the gateway exits promptly on SIGTERM after commands left connections open (6 rounds)', async (t) => {
  // An HTTP-like target that keeps each connection open after answering.
  const held = new Set<Socket>();
  const target = createServer((socket) => {
    held.add(socket);
    socket.on('error', () => undefined);
    socket.on('data', () => socket.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok'));
  });
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        for (const socket of held) socket.destroy();
        target.close(() => resolve());
      }),
  );
  await new Promise<void>((resolve) => target.listen(0, '127.0.0.1', resolve));
  const dir = scratchDir(t);
  // The command asks once and exits at once, its connection still open: the tunnel resets it, and the
  // gateway resets the target side (Node's own teardown used to hang on such a socket now and then).
  const command = `"${process.execPath}" -e "const s=require('net').connect(+process.env.PAM_TUNNEL_PORT,'127.0.0.1',()=>s.write('GET / HTTP/1.1\\r\\n\\r\\n'));s.on('data',()=>process.exit(3))"`;
  const exits: string[] = [];
  for (let round = 0; round < 6; round += 1) {
    const gateway = await startGatewayProc(t, dir, token, { web: (target.address() as AddressInfo).port });
    for (let run = 0; run < 2; run += 1) {
      const oneShot = pam(t, ['tunnel', 'start', 'web', '--gateway', gateway.url, '-R', command], { env: tunnelEnv(dir, token) });
      t.equal(await oneShot.exited, 3, `the command ran through the tunnel: ${oneShot.stderr}`);
    }
    gateway.proc.child.kill('SIGTERM');
    const code = await Promise.race([
      gateway.proc.exited,
      new Promise((resolve) => setTimeout(() => resolve('still running after 5 s'), 5_000)),
    ]);
    exits.push(String(code));
  }
  t.same(exits, Array(6).fill('0'), 'every gateway exited 0 within 5 s of SIGTERM');
});
