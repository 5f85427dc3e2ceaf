// Where the gateway URL and token come from: flags > environment. The token is never taken from argv
// (other users can read argv in `ps`): only from PAM_GATEWAY_TOKEN or a --token-file.

import { readFileSync } from 'node:fs';
import { TunnelError } from '../machines/errors.js';

export function gatewayUrl(flag: string | undefined, env: NodeJS.ProcessEnv): string | undefined {
  return flag ?? env.PAM_GATEWAY_URL;
}

export function readToken(tokenFile: string | undefined, env: NodeJS.ProcessEnv, who: 'client' | 'gateway'): string {
  if (tokenFile !== undefined) {
    let text: string;
    try {
      text = readFileSync(tokenFile, 'utf8');
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? String(error);
      throw new TunnelError('usage', `cannot read --token-file ${tokenFile} (${code}): check the path and its permissions`);
    }
    const token = text.trim();
    if (token === '') throw new TunnelError('usage', `--token-file ${tokenFile} is empty: put the gateway token in it`);
    return token;
  }
  const token = env.PAM_GATEWAY_TOKEN?.trim();
  if (token) return token;
  const hint =
    who === 'gateway'
      ? 'the gateway refuses to start without a token: set PAM_GATEWAY_TOKEN or pass --token-file (never on the command line)'
      : 'no gateway token: set PAM_GATEWAY_TOKEN or pass --token-file';
  throw new TunnelError('usage', hint);
}

/**
 * Local addresses ICE may use as host candidates, from `PAM_ICE_HOSTS` (comma-separated), e.g.
 * `127.0.0.1` when gateway and client share a machine. Unset: every non-loopback interface.
 */
export function iceHosts(env: NodeJS.ProcessEnv): string[] {
  return (env.PAM_ICE_HOSTS ?? '')
    .split(',')
    .map((host) => host.trim())
    .filter(Boolean);
}
