// A gateway key's fingerprint as users see and pin it (`SHA256:<base64>`, the ssh style). Its own module
// so that commands which only print or compare fingerprints (known_gateways) do not load HPKE.

import { createHash } from 'node:crypto';

export function keyFingerprint(publicKey: Buffer): string {
  return `SHA256:${createHash('sha256').update(publicKey).digest('base64').replace(/=+$/, '')}`;
}
