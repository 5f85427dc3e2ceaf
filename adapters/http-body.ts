// Reading an HTTP message body whole, with a bound: the gateway reads signalling requests with it,
// the client the gateway's answers. Neither side buffers more than `limit` bytes from its peer.

import type { IncomingMessage } from 'node:http';

export class BodyTooLarge extends Error {
  constructor(readonly limit: number) {
    super(`body larger than ${limit} bytes`);
  }
}

/**
 * The body as UTF-8 text; rejects with BodyTooLarge as soon as the declared or received length passes
 * `limit`. What arrives after that is drained and dropped, so a server can still answer (413).
 */
export async function readBody(message: IncomingMessage, limit: number): Promise<string> {
  return (await readBodyBytes(message, limit)).toString('utf8');
}

/** The body as bytes (sealed signalling is binary), with the same bound as readBody. */
export function readBodyBytes(message: IncomingMessage, limit: number): Promise<Buffer> {
  if (Number(message.headers['content-length'] ?? 0) > limit) return Promise.reject(new BodyTooLarge(limit));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    message.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        reject(new BodyTooLarge(limit));
        message.removeAllListeners('data');
        message.resume();
        return;
      }
      chunks.push(chunk);
    });
    message.on('end', () => resolve(Buffer.concat(chunks)));
    message.on('error', reject);
  });
}
