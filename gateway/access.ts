// Who may open which tunnel: the shared token (simple mode: every target) and the user keys of
// authorized_keys (a signature over the request, then that key's grants). Pure decisions over the
// grants in force; gateway/signalling.ts asks, and refuses through its one refusal function.
// How the two coexist: docs/access.md#token-and-keys-on-one-gateway.

import { createHash, timingSafeEqual } from 'node:crypto';
import { publicKeyObject, verifyStatement, type AccessStatement } from '../adapters/user-key.js';
import { keyFingerprint } from '../adapters/key-fingerprint.js';
import { addressAllowed, normalizeAddress, type AuthorizedKeys, type Grant } from './authorized-keys.js';
import type { Principal, RefusalCode, RevocationCode } from './principal.js';
import { socksTarget } from '../machines/start-flags.js';

export class AccessDenied extends Error {
  constructor(
    readonly code: RefusalCode,
    message: string,
    /** The principal the request proved, when it got that far. */
    readonly principal?: Principal,
  ) {
    super(message);
  }
}

export interface AccessOptions {
  /** The shared token; absent when the gateway admits keys only. */
  readonly token?: string;
  /** The grants in force now (re-read on SIGHUP / change); absent when the gateway has no authorized_keys. */
  readonly keys?: () => AuthorizedKeys;
  readonly requireReason?: boolean;
  readonly now?: () => number;
}

/** The credential fields of an opened sealed request, unchecked. */
export interface Presented {
  readonly token?: unknown;
  readonly key?: unknown;
  readonly signature?: unknown;
}

export interface Access {
  /** The principal a request speaks for, or AccessDenied. `held(fp)` counts the key's live tunnels. */
  authorize(presented: Presented, statement: AccessStatement, client: string, held: (fingerprint: string) => number): Principal;
  /** Why a live tunnel of `principal` to `target` from `client` may no longer run, or undefined. */
  revoked(principal: Principal, target: string, client: string): { code: RevocationCode; message: string } | undefined;
  /** The targets `principal` may reach (all of `served` for the token). */
  granted(principal: Principal, served: readonly string[]): readonly string[];
  readonly admitsKeys: boolean;
  readonly admitsToken: boolean;
}

const digest = (text: string) => createHash('sha256').update(text).digest();
const shown = (grant: Grant) => `key ${grant.fingerprint}${grant.comment ? ` (${grant.comment})` : ''}`;
const iso = (ms: number) => new Date(ms).toISOString().replace('.000Z', 'Z');

export function createAccess(options: AccessOptions): Access {
  const now = options.now ?? Date.now;
  const tokenDigest = options.token !== undefined ? digest(options.token) : undefined;
  const keys = options.keys;

  function principalOf(grant: Grant): Principal {
    return { kind: 'key', fingerprint: grant.fingerprint, comment: grant.comment };
  }

  function keyPrincipal(presented: Presented, statement: AccessStatement): Grant {
    if (typeof presented.key !== 'string' || typeof presented.signature !== 'string')
      throw new AccessDenied('bad-signature', 'the request carries a key without a signature (or the reverse): both are needed');
    const raw = Buffer.from(presented.key, 'base64');
    const publicKey = publicKeyObject(raw);
    if (!publicKey || raw.toString('base64') !== presented.key)
      throw new AccessDenied('bad-signature', 'the request names a key that is not 32 bytes of Ed25519 in base64');
    const fingerprint = keyFingerprint(raw);
    if (!verifyStatement(publicKey, statement, Buffer.from(presented.signature, 'base64')))
      throw new AccessDenied(
        'bad-signature',
        `the request's signature does not verify with key ${fingerprint}: it was altered on the way, or signed by another key`,
      );
    const grant = keys?.().grants.get(fingerprint);
    if (!grant)
      throw new AccessDenied(
        'unknown-key',
        `key ${fingerprint} is not in this gateway's authorized_keys: give its operator the line of your .pub file`,
        // Proven (the signature verified) but not granted: named by fingerprint alone.
        { kind: 'key', fingerprint, comment: '' },
      );
    return grant;
  }

  return {
    admitsKeys: keys !== undefined,
    admitsToken: tokenDigest !== undefined,

    authorize(presented, statement, client, held) {
      let principal: Principal;
      if (keys && (presented.key !== undefined || presented.signature !== undefined)) {
        const grant = keyPrincipal(presented, statement);
        principal = principalOf(grant);
        if (grant.expires !== undefined && grant.expires <= now())
          throw new AccessDenied(
            'expired-key',
            `${shown(grant)} expired at ${iso(grant.expires)}: ask the gateway's operator to renew it`,
            principal,
          );
        if (!addressAllowed(grant, client))
          throw new AccessDenied(
            'source-not-allowed',
            `${shown(grant)} may not connect from ${normalizeAddress(client)}: that address is outside its from= list`,
            principal,
          );
        if (statement.target === socksTarget ? !grant.socks : !grant.targets.includes(statement.target))
          throw new AccessDenied(
            'target-not-granted',
            statement.target === socksTarget
              ? `${shown(grant)} has no socks="…" grant: it may not open SOCKS tunnels (it may reach: ${grant.targets.join(', ') || 'nothing'})`
              : `${shown(grant)} is not granted target '${statement.target.slice(0, 64)}'; it may reach: ${grant.targets.join(', ')}`,
            principal,
          );
        if (grant.maxTunnels !== undefined && held(grant.fingerprint) >= grant.maxTunnels)
          throw new AccessDenied(
            'tunnel-limit',
            `${shown(grant)} already holds ${grant.maxTunnels} tunnel(s), its max-tunnels: stop one first`,
            principal,
          );
      } else if (tokenDigest !== undefined) {
        const token = typeof presented.token === 'string' ? presented.token : '';
        if (!(timingSafeEqual(digest(token), tokenDigest) && token.length > 0)) throw new AccessDenied('token-refused', 'token refused');
        principal = { kind: 'token' };
      } else {
        throw new AccessDenied(
          'no-credentials',
          "this gateway admits user keys only: create one with `pam keygen`, have it added to the gateway's authorized_keys, and pass --key-file or PAM_KEY_FILE",
        );
      }
      if (options.requireReason && !(typeof statement.reason === 'string' && statement.reason.trim() !== ''))
        throw new AccessDenied(
          'reason-required',
          'this gateway requires a reason for every tunnel: pass --reason TEXT (and --ticket ID)',
          principal,
        );
      return principal;
    },

    revoked(principal, target, client) {
      if (principal.kind !== 'key') return undefined;
      const grant = keys?.().grants.get(principal.fingerprint);
      const who = `key ${principal.fingerprint}${principal.comment ? ` (${principal.comment})` : ''}`;
      if (!grant) return { code: 'key-removed', message: `access revoked: ${who} was removed from the gateway's authorized_keys` };
      if (grant.expires !== undefined && grant.expires <= now())
        return { code: 'key-expired', message: `access revoked: ${who} expired at ${iso(grant.expires)}` };
      if (target === socksTarget ? !grant.socks : !grant.targets.includes(target))
        return { code: 'target-revoked', message: `access revoked: ${who} is no longer granted target '${target}'` };
      if (!addressAllowed(grant, client))
        return { code: 'source-revoked', message: `access revoked: ${who} may no longer connect from ${normalizeAddress(client)}` };
      return undefined;
    },

    granted(principal, served) {
      if (principal.kind === 'token') return served;
      const grant = keys?.().grants.get(principal.fingerprint);
      return grant ? grant.targets.filter((name) => served.includes(name)) : [];
    },
  };
}
