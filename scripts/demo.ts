// `npm run demo`: a gateway, a small web target and a tunnel, all real processes on 127.0.0.1, then a
// page fetched through the tunnel, a --run one-shot, and a clean teardown. Leaves nothing behind.

import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const pamBin = join(root, 'bin', 'pam');
const say = (text: string) => process.stdout.write(`${text}\n`);
const step = (text: string) => say(`\n▸ ${text}`);

const children: ChildProcess[] = [];
let target: Server | undefined;
const workDir = mkdtempSync(join(tmpdir(), 'pam-demo-'));
const env = {
  ...process.env,
  PAM_GATEWAY_TOKEN: randomBytes(16).toString('hex'),
  PAM_TUNNEL_REGISTRY: join(workDir, 'registry'),
  // ICE on loopback only: the demo never talks to any other address.
  PAM_ICE_HOSTS: '127.0.0.1',
  CI: 'true',
};

function pam(args: string[]): { child: ChildProcess; output: () => string; exited: Promise<number | null> } {
  const child = spawn(process.execPath, [pamBin, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  return { child, output: () => output, exited: new Promise((resolveExit) => child.once('exit', (code) => resolveExit(code))) };
}

async function jsonLine(proc: ReturnType<typeof pam>, event: string | undefined, ms = 20_000): Promise<Record<string, unknown>> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    for (const line of proc.output().split('\n')) {
      if (!line.startsWith('{')) continue;
      const value = JSON.parse(line) as Record<string, unknown>;
      if (event === undefined || value.event === event) return value;
    }
    if (proc.child.exitCode !== null) break;
    await new Promise((resolveWait) => setTimeout(resolveWait, 50));
  }
  throw new Error(`no '${event}' line from pam:\n${proc.output()}`);
}

async function main(): Promise<void> {
  say('pam-tunnel demo: everything runs on 127.0.0.1 and is cleaned up at the end.');

  step('A web target that only the gateway will reach');
  target = createServer((request, response) => response.end(`Hello from the demo target (you asked for ${request.url})\n`));
  await new Promise<void>((resolveListen) => target!.listen(0, '127.0.0.1', resolveListen));
  const targetPort = (target.address() as AddressInfo).port;
  say(`  web target on 127.0.0.1:${targetPort}`);

  step(`pam gateway --listen 127.0.0.1:0 --target web=127.0.0.1:${targetPort}`);
  const gateway = pam(['gateway', '--listen', '127.0.0.1:0', '--json', '--target', `web=127.0.0.1:${targetPort}`]);
  const gatewayUrl = String((await jsonLine(gateway, 'listening')).url);
  say(`  gateway listening on ${gatewayUrl} (token from PAM_GATEWAY_TOKEN, never argv)`);

  step('pam tunnel start web --foreground --json');
  const started = Date.now();
  const tunnel = pam(['tunnel', 'start', 'web', '--foreground', '--json', '--gateway', gatewayUrl]);
  const ready = await jsonLine(tunnel, 'ready');
  say(`  ready in ${Date.now() - started} ms: 127.0.0.1:${ready.port} → web (tunnel ${ready.id}, pid ${ready.pid})`);

  step(`GET http://127.0.0.1:${ready.port}/through-the-tunnel`);
  const page = await (await fetch(`http://127.0.0.1:${ready.port}/through-the-tunnel`)).text();
  say(`  ${page.trim()}`);

  step('pam tunnel list');
  const list = pam(['tunnel', 'list']);
  await list.exited;
  say(list.output().trimEnd().replace(/^/gm, '  '));

  step(`pam tunnel start web --run '<a node one-liner that fetches the page and exits 3>'`);
  const script = `fetch('http://'+process.env.PAM_TUNNEL_HOST+':'+process.env.PAM_TUNNEL_PORT+'/from-run').then(r=>r.text()).then(t=>{console.log('  command saw: '+t.trim());process.exit(3)})`;
  const oneShot = pam(['tunnel', 'start', 'web', '--gateway', gatewayUrl, '--run', `"${process.execPath}" -e "${script}"`]);
  const oneShotCode = await oneShot.exited;
  say(
    oneShot
      .output()
      .split('\n')
      .filter((line) => line.includes('command saw'))
      .join('\n'),
  );
  say(`  pam exited ${oneShotCode}: the wrapped command's own code`);

  step('SIGTERM the foreground tunnel, then the gateway');
  tunnel.child.kill('SIGTERM');
  say(`  tunnel exited ${await tunnel.exited} (${String((await jsonLine(tunnel, 'stopped')).reason)})`);
  gateway.child.kill('SIGTERM');
  say(`  gateway exited ${await gateway.exited}`);

  say('\nWhere to look next:');
  say('  ./bin/pam --help                  commands, with examples');
  say('  README.md                         quick start, exit codes, recipes');
  say('  docs/machines/tunnel.md           the tunnel state machine (generated from the code)');
}

async function cleanUp(): Promise<void> {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  await new Promise<void>((resolveClose) => (target ? target.close(() => resolveClose()) : resolveClose()));
  rmSync(workDir, { recursive: true, force: true });
}

// Interrupted (Ctrl-C, SIGTERM): stop what the demo started and remove its files before leaving.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    void cleanUp().finally(() => process.exit(signal === 'SIGINT' ? 130 : 143));
  });
}

main().then(cleanUp, async (error: unknown) => {
  await cleanUp();
  process.stderr.write(`demo failed: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
});
