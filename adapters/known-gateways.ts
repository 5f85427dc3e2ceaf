// Gateway key pinning, the ssh way: a pinned fingerprint (PAM_GATEWAY_KEY or config `gatewayKey`)
// must match; without a pin, the first key a gateway URL shows is recorded in
// `$XDG_CONFIG_HOME/pam/known_gateways` (0600) and any other key for that URL later is refused.
// A refusal is exit 77 and names both fingerprints and what to change.

import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { TunnelError } from '../machines/errors.js';
import { keyFingerprint } from './key-fingerprint.js';

export interface GatewayKeyCheck {
  /** Throws TunnelError gatewayKeyMismatch when `publicKey` is not the one expected for `url`. */
  verify(url: string, publicKey: Buffer): void;
  /** The gateway proved it holds the key (its sealed answer opened): remember it, if not pinned. */
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
      const identity = gatewayIdentity(url);
      if (options.pin) {
        if (shown === options.pin.fingerprint) return;
        throw new TunnelError(
          'gatewayKeyMismatch',
          `gateway ${identity} presents key ${shown}, but ${options.pin.source} pins ${options.pin.fingerprint}: no tunnel was set up; ` +
            `if the gateway's key was replaced on purpose, set ${options.pin.source} to ${shown}`,
        );
      }
      const recorded = read().get(identity);
      if (recorded === undefined || recorded === shown) return;
      throw new TunnelError(
        'gatewayKeyMismatch',
        `gateway ${identity} presents key ${shown}, but ${options.file} records ${recorded}: no tunnel was set up; ` +
          `if the gateway's key was replaced on purpose, remove its line from ${options.file} (or pin the new key with PAM_GATEWAY_KEY=${shown})`,
      );
    },
    trust(url, publicKey) {
      if (options.pin) return;
      const identity = gatewayIdentity(url);
      const known = read();
      if (known.has(identity)) return;
      mkdirSync(dirname(options.file), { recursive: true, mode: 0o700 });
      let text = '';
      try {
        text = readFileSync(options.file, 'utf8');
      } catch {
        // first entry
      }
      writeFileSync(options.file, `${text}${text === '' || text.endsWith('\n') ? '' : '\n'}${identity} ${keyFingerprint(publicKey)}\n`, {
        mode: 0o600,
      });
      chmodSync(options.file, 0o600);
    },
  };
}
