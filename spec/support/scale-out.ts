// Shared by the scale-out specs: a cluster of two `pam broker --redis` over one redis-server with an
// echo target, a --run command that checks 256 KiB echoed, and small probes.

import { join } from 'node:path';
import { startBrokerProc } from './broker.js';
import { echoServer, type Proc, scratchDir, sha256, type Teardownable } from './processes.js';
import { startRedis } from './redis.js';

/** Sends 256 KiB through the tunnel and prints the sha256 of what came back. */
export const echoScript = `"${process.execPath}" -e 'const p=require("crypto").createHash("sha256");const b=Buffer.alloc(262144,7);let n=0;const s=require("net").connect(+process.env.PAM_TUNNEL_PORT,"127.0.0.1",()=>s.end(b));s.on("data",d=>{p.update(d);n+=d.length});s.on("end",()=>{process.stdout.write(p.digest("hex"));process.exitCode=n===262144?0:5})'`;
export const expected = sha256(Buffer.alloc(262144, 7));

export async function health(url: string): Promise<Record<string, unknown>> {
  return (await (await fetch(`${url}/healthz`)).json()) as Record<string, unknown>;
}

/** How many tunnels a gateway has logged as open (the one whose count grew carries the new tunnel). */
export function opens(proc: Proc): number {
  return proc.stderr.split('\n').filter((line) => /tunnel to echo open/.test(line)).length;
}

export async function cluster(t: Teardownable) {
  const dir = scratchDir(t);
  const echo = await echoServer(t);
  const redis = await startRedis(t, dir);
  const brokerArgs = ['--redis', redis.url];
  const b1 = await startBrokerProc(t, dir, brokerArgs);
  const b2 = await startBrokerProc(t, dir, brokerArgs);
  const keyFile = join(dir, 'site.key');
  const env = { PAM_KEEPALIVE_TIMEOUT: '2' };
  return { dir, echo, redis, b1, b2, keyFile, env, brokerArgs };
}
