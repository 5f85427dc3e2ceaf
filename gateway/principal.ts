// Who asks for a tunnel, and what they asked: the gateway's record of one access request, shared by
// the access check (gateway/access.ts), signalling (gateway/signalling.ts) and the audit log.
// Never holds a secret: a key is named by its fingerprint and comment, a token by the word `token`.

/** Who a request speaks for. */
export type Principal = { readonly kind: 'key'; readonly fingerprint: string; readonly comment: string } | { readonly kind: 'token' };

/** Why access was refused: one code a refusal, for logs, the audit trail and tests. */
export type RefusalCode =
  | 'no-credentials'
  | 'token-refused'
  | 'bad-signature'
  | 'unknown-key'
  | 'expired-key'
  | 'target-not-granted'
  | 'source-not-allowed'
  | 'tunnel-limit'
  | 'reason-required'
  | 'replayed';

/** Why a live tunnel was ended by the gateway's access rules. */
export type RevocationCode = 'key-removed' | 'target-revoked' | 'key-expired' | 'source-revoked';

/** One request as the access check saw it. `principal` is absent when the request proved no identity. */
export interface AccessRequest {
  readonly principal?: Principal;
  /** The client's address as this gateway (or the broker in front of it) saw it. */
  readonly client: string;
  readonly target: string;
  readonly reason?: string;
  readonly ticket?: string;
}

export interface AccessRefusal {
  readonly request: AccessRequest;
  readonly code: RefusalCode;
  /** The line the client is shown (and exits 77 with). */
  readonly message: string;
}

export const describePrincipal = (principal: Principal | undefined): string =>
  principal === undefined
    ? 'an unidentified client'
    : principal.kind === 'token'
      ? 'the shared token'
      : `key ${principal.fingerprint}${principal.comment ? ` (${principal.comment})` : ''}`;
