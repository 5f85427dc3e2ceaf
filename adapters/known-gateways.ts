// Gateway key pinning, the ssh way: a pinned fingerprint (PAM_GATEWAY_KEY or config `gatewayKey`)
// must match; without a pin, the first key a gateway URL shows is recorded in
// `$XDG_CONFIG_HOME/pam/known_gateways` (0600) and any other key for that URL later is refused.
// A refusal is exit 77 and names both fingerprints and what to change. A list of URLs of one site
// (the site through several brokers) is one gateway identity: the key must match the record of every
// URL in it, and is recorded for each, so whichever broker answers, pinning still means "this site".

import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { TunnelError } from '../machines/errors.js';
import { gatewayUrls } from '../machines/start-flags.js';
import { keyFingerprint } from './key-fingerprint.js';

export interface GatewayKeyCheck {
  /** Throws TunnelError gatewayKeyMismatch when `publicKey` is not the one expected for `url` (a URL or a comma-separated list). */
  verify(url: string, publicKey: Buffer): void;
  /** The gateway proved it holds the key (its sealed answer opened): remember it for each URL, if not pinned. */
  trust(url: string, publicKey: Buffer): void;
}

export function knownGatewaysPath(env: NodeJS.ProcessEnv): string {
  return join(env.XDG_CONFIG_HOME || join(env.HOME || homedir(), '.config'), 'pam', 'known_gateways');
}

export const fingerprintPattern = /^SHA256:[A-Za-z0-9+/]{43}$/;

/** One spelling per gateway: origin and path, no trailing slash, no query. */
export function gatewayIdentity(url: string): string {
  const parsed = new URL(url);
  return `${parsed.origin}${parsed.pathname.replace(/\/+$/, '')}`;
}

export function createGatewayKeyCheck(options: { pin?: { fingerprint: string; source: string }; file: string }): GatewayKeyCheck {
  const read = (): Map<string, string> => {
    const known = new Map<string, string>();
    let text = '';
    try {
      text = readFileSync(options.file, 'utf8');
    } catch {
      return known;
    }
    for (const line of text.split('\n')) {
      const [url, fingerprint] = line.trim().split(/\s+/);
      if (url && fingerprint && !url.startsWith('#')) known.set(url, fingerprint);
    }
    return known;
  };
  return {
    verify(url, publicKey) {
      const shown = keyFingerprint(publicKey);
      const identities = gatewayUrls(url).map(gatewayIdentity);
      const identity = identities.join(',');
      if (options.pin) {
        if (shown === options.pin.fingerprint) return;
        throw new TunnelError(
          'gatewayKeyMismatch',
          `gateway ${identity} presents key ${shown}, but ${options.pin.source} pins ${options.pin.fingerprint}: no tunnel was set up; ` +
            `if the gateway's key was replaced on purpose, set ${options.pin.source} to ${shown}`,
        );
      }
      const known = read();
      const differing = identities.find((one) => known.has(one) && known.get(one) !== shown);
      if (differing === undefined) return;
      const recorded = known.get(differing);
      throw new TunnelError(
        'gatewayKeyMismatch',
        `gateway ${identity} presents key ${shown}, but ${options.file} records ${recorded}${identities.length > 1 ? ` for ${differing}` : ''}: no tunnel was set up; ` +
          `if the gateway's key was replaced on purpose, remove its line${identities.length > 1 ? 's' : ''} from ${options.file} (or pin the new key with PAM_GATEWAY_KEY=${shown})`,
      );
    },
    trust(url, publicKey) {
      if (options.pin) return;
      const known = read();
      const missing = gatewayUrls(url)
        .map(gatewayIdentity)
        .filter((identity) => !known.has(identity));
      if (missing.length === 0) return;
      mkdirSync(dirname(options.file), { recursive: true, mode: 0o700 });
      let text = '';
      try {
        text = readFileSync(options.file, 'utf8');
      } catch {
        // first entry
      }
      const lines = missing.map((identity) => `${identity} ${keyFingerprint(publicKey)}\n`).join('');
      writeFileSync(options.file, `${text}${text === '' || text.endsWith('\n') ? '' : '\n'}${lines}`, {
        mode: 0o600,
      });
      chmodSync(options.file, 0o600);
    },
  };
}
