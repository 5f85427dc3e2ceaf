// Test helpers for sealed signalling: a throwaway gateway key, and a sealed POST that shows both the
// HTTP status (refusals in clear) and the sealed reply (everything the gateway decided after opening).

import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { keyPairFromSeed, openRequest, sealedContentType, sealRequest, type GatewayKeyPair } from '../../adapters/sealed-signalling.js';

export const testGatewayKey = (): Promise<GatewayKeyPair> => keyPairFromSeed(randomBytes(32));

export interface SealedResult {
  readonly http: number;
  /** The opened reply: { status, answer?, earlyData?, error?, targets? }; undefined when refused in clear. */
  readonly reply?:
    | { status: number; answer?: string; earlyData?: boolean; negotiatedChannel?: number; error?: string; targets?: string[] }
    | undefined;
  readonly envelope: Buffer;
  /** Opens another reply to the same sealed request (a replay's). */
  readonly open: (reply: Buffer) => SealedResult['reply'];
}

/** Seal `payload` (token, nonce and timestamp added unless given) and POST it to `${url}/v1/tunnels`. */
export async function sealedPost(
  url: string,
  publicKey: Buffer,
  payload: Record<string, unknown>,
  envelope?: Buffer,
): Promise<SealedResult> {
  const plain = { nonce: randomBytes(16).toString('hex'), timestamp: Date.now(), ...payload };
  const sealed = await sealRequest(publicKey, Buffer.from(JSON.stringify(plain)));
  const body = envelope ?? sealed.envelope;
  const response = await fetch(`${url}/v1/tunnels`, { method: 'POST', headers: { 'content-type': sealedContentType }, body });
  const bytes = Buffer.from(await response.arrayBuffer());
  const open = (reply: Buffer) => JSON.parse(sealed.open(reply).toString('utf8')) as SealedResult['reply'];
  if (response.status !== 200 || envelope) return { http: response.status, envelope: body, open };
  return { http: 200, reply: open(bytes), envelope: body, open };
}

/** A request handler for a stand-in gateway: serves GET /v1/key, opens sealed offers, seals `reply(plain)`. */
export function sealedHandler(
  key: GatewayKeyPair,
  reply: (plain: Record<string, unknown>) => Record<string, unknown>,
  onOffer: () => void = () => undefined,
) {
  return (request: IncomingMessage, response: ServerResponse) => {
    if (request.url === '/v1/key') {
      response.setHeader('content-type', 'application/json');
      response.end(JSON.stringify({ kem: 'X25519', key: key.publicKey.toString('base64') }));
      return;
    }
    onOffer();
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      void openRequest(key, Buffer.concat(chunks)).then(({ request: plain, seal }) => {
        response.setHeader('content-type', sealedContentType);
        response.end(seal(Buffer.from(JSON.stringify(reply(JSON.parse(plain.toString('utf8')) as Record<string, unknown>)))));
      });
    });
  };
}
