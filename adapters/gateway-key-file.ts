// The gateway's long-term key file: a 32-byte seed from which its X25519 key pair is derived, created
// on first start with mode 0600 (in a 0700 directory) and refused when others can read it.

import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { TunnelError } from '../machines/errors.js';
import { keyPairFromSeed, newKeySeed, type GatewayKeyPair } from './sealed-signalling.js';

const prefix = 'pam-gateway-key-v1 ';

/** `$XDG_STATE_HOME/pam/gateway.key` (default `~/.local/state/pam/gateway.key`). */
export function defaultKeyFile(env: NodeJS.ProcessEnv): string {
  return join(env.XDG_STATE_HOME || join(env.HOME || homedir(), '.local', 'state'), 'pam', 'gateway.key');
}

export async function loadOrCreateGatewayKey(path: string): Promise<GatewayKeyPair & { created: boolean }> {
  let text: string | undefined;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new TunnelError(
        'usage',
        `cannot read the gateway key file ${path} (${(error as NodeJS.ErrnoException).code}): check --key-file and its permissions`,
      );
    }
  }
  if (text === undefined) {
    const seed = newKeySeed();
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    try {
      // 'wx': two gateways starting at once do not overwrite each other's fresh key.
      writeFileSync(path, `${prefix}${seed.toString('base64')}\n`, { mode: 0o600, flag: 'wx' });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'EEXIST') return loadOrCreateGatewayKey(path);
      throw new TunnelError(
        'usage',
        `cannot create the gateway key file ${path} (${(error as NodeJS.ErrnoException).code}): pass --key-file with a writable path`,
      );
    }
    chmodSync(path, 0o600);
    return { ...(await keyPairFromSeed(seed)), created: true };
  }
  const mode = statSync(path).mode & 0o777;
  if ((mode & 0o077) !== 0)
    throw new TunnelError(
      'usage',
      `gateway key file ${path} is readable or writable by others (mode ${mode.toString(8)}): run chmod 600 ${path}`,
    );
  const seed = text.startsWith(prefix) ? Buffer.from(text.slice(prefix.length).trim(), 'base64') : Buffer.alloc(0);
  if (seed.length !== 32)
    throw new TunnelError('usage', `gateway key file ${path} is not a pam gateway key (expected one line '${prefix.trim()} <base64>')`);
  return { ...(await keyPairFromSeed(seed)), created: false };
}
