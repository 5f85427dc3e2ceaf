// The gateway's authorized_keys file, in the spirit of OpenSSH's: one key a line,
// `[options] pam-ed25519 <base64> [comment]`, options `targets="a,b"` (required unless socks= is given),
// `socks="HOST:PORTS,…"` (SOCKS tunnels, within the gateway's --socks-allow), `expires="ISO-8601"`,
// `from="CIDR,…"`, `max-tunnels=N`. Pure parsing: a malformed line is an error naming its line number.

import { BlockList, isIP } from 'node:net';
import { keyFingerprint } from '../adapters/key-fingerprint.js';
import { publicKeyType } from '../adapters/user-key.js';
import { isTargetName, targetNameRule } from '../machines/start-flags.js';
import { parseSocksRules, SocksRuleError, type SocksRule } from './socks-policy.js';

export interface Grant {
  readonly line: number;
  /** The raw 32-byte Ed25519 public key. */
  readonly publicKey: Buffer;
  readonly fingerprint: string;
  readonly comment: string;
  readonly targets: readonly string[];
  /** `socks="…"`: the key may open SOCKS tunnels, to destinations these rules and --socks-allow both allow. */
  readonly socks?: readonly SocksRule[];
  /** Epoch ms after which the key is refused (and its tunnels end). */
  readonly expires?: number;
  /** Client addresses allowed, as written (`198.51.100.0/24`), and their matcher. */
  readonly from?: { readonly text: readonly string[]; readonly list: BlockList };
  readonly maxTunnels?: number;
}

export interface AuthorizedKeys {
  /** By fingerprint. */
  readonly grants: ReadonlyMap<string, Grant>;
}

export class AuthorizedKeysError extends Error {
  constructor(
    readonly line: number,
    message: string,
  ) {
    super(`line ${line}: ${message}`);
  }
}

const optionNames = new Set(['targets', 'socks', 'expires', 'from', 'max-tunnels']);
const isoPattern = /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2}))?$/;
const base64Pattern = /^[A-Za-z0-9+/]{43}=$/;

/** Parse the whole file; the first malformed line throws AuthorizedKeysError with its number. */
export function parseAuthorizedKeys(text: string): AuthorizedKeys {
  const grants = new Map<string, Grant>();
  const lines = text.split(/\r?\n/);
  for (const [index, raw] of lines.entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const grant = parseLine(line, index + 1);
    const earlier = grants.get(grant.fingerprint);
    if (earlier) throw new AuthorizedKeysError(index + 1, `key ${grant.fingerprint} is already on line ${earlier.line}: one line per key`);
    grants.set(grant.fingerprint, grant);
  }
  return { grants };
}

function parseLine(line: string, number: number): Grant {
  const fail = (message: string): never => {
    throw new AuthorizedKeysError(number, message);
  };
  let rest = line;
  let options: Map<string, string> = new Map();
  if (!rest.startsWith(`${publicKeyType} `) && rest !== publicKeyType) {
    const { parsed, end } = parseOptions(rest, fail);
    options = parsed;
    rest = rest.slice(end).trimStart();
  }
  const fields = rest.split(/\s+/);
  if (fields[0] !== publicKeyType) fail(`expected '${publicKeyType}' after the options, found '${(fields[0] ?? '').slice(0, 32)}'`);
  const encoded = fields[1] ?? '';
  if (!base64Pattern.test(encoded)) fail(`the key must be 32 bytes of base64 (44 characters ending in '='), as \`pam keygen\` prints it`);
  const publicKey = Buffer.from(encoded, 'base64');
  if (publicKey.length !== 32 || publicKey.toString('base64') !== encoded) fail('the key is not canonical base64 of 32 bytes');
  const comment = fields.slice(2).join(' ');

  let socks: SocksRule[] | undefined;
  const socksText = options.get('socks');
  if (socksText !== undefined) {
    try {
      socks = parseSocksRules(socksText.split(',').map((rule) => rule.trim()));
    } catch (error) {
      if (!(error instanceof SocksRuleError)) throw error;
      fail(`socks: ${error.message.replace('--socks-allow ', 'rule ')}`);
    }
  }
  const targetsText = options.get('targets');
  if (targetsText === undefined && socks === undefined)
    fail('targets="…" is required: name the targets this key may reach, e.g. targets="web,db" (or socks="…" for SOCKS tunnels)');
  const targets = targetsText === undefined ? [] : targetsText.split(',').map((name) => name.trim());
  for (const name of targets) {
    if (!isTargetName(name)) fail(`targets: '${name.slice(0, 64)}' is not a target name (${targetNameRule})`);
  }
  if (new Set(targets).size !== targets.length) fail('targets: a target is named twice');

  let expires: number | undefined;
  const expiresText = options.get('expires');
  if (expiresText !== undefined) {
    expires = isoPattern.test(expiresText) ? Date.parse(expiresText) : Number.NaN;
    if (!Number.isFinite(expires))
      fail(`expires="${expiresText.slice(0, 40)}" is not an ISO-8601 time, e.g. expires="2027-01-31T00:00:00Z"`);
  }

  let from: Grant['from'];
  const fromText = options.get('from');
  if (fromText !== undefined) {
    const list = new BlockList();
    const text = fromText.split(',').map((entry) => entry.trim());
    for (const entry of text) addCidr(list, entry, fail);
    from = { text, list };
  }

  let maxTunnels: number | undefined;
  const maxText = options.get('max-tunnels');
  if (maxText !== undefined) {
    maxTunnels = /^\d{1,5}$/.test(maxText) ? Number(maxText) : 0;
    if (!(maxTunnels >= 1 && maxTunnels <= 10_000)) fail(`max-tunnels=${maxText.slice(0, 20)} must be a whole number from 1 to 10000`);
  }

  return {
    line: number,
    publicKey,
    fingerprint: keyFingerprint(publicKey),
    comment,
    targets,
    ...(socks ? { socks } : {}),
    ...(expires !== undefined ? { expires } : {}),
    ...(from ? { from } : {}),
    ...(maxTunnels !== undefined ? { maxTunnels } : {}),
  };
}

/** `name="value",name=value …` up to the first whitespace outside quotes. */
function parseOptions(text: string, fail: (message: string) => never): { parsed: Map<string, string>; end: number } {
  const parsed = new Map<string, string>();
  let at = 0;
  for (;;) {
    const name = /^[a-z-]+/.exec(text.slice(at))?.[0];
    if (!name) fail(`expected an option (targets=, socks=, expires=, from=, max-tunnels=) or '${publicKeyType}' at column ${at + 1}`);
    if (!optionNames.has(name!)) fail(`unknown option '${name}' (known: targets, socks, expires, from, max-tunnels)`);
    if (parsed.has(name!)) fail(`option '${name}' is given twice`);
    at += name!.length;
    if (text[at] !== '=') fail(`option '${name}' needs a value: ${name}="…"`);
    at += 1;
    let value: string;
    if (text[at] === '"') {
      const close = text.indexOf('"', at + 1);
      if (close < 0) fail(`option '${name}': the quoted value is not closed`);
      value = text.slice(at + 1, close);
      at = close + 1;
    } else {
      const end = /^[^,\s"]*/.exec(text.slice(at))![0];
      value = end;
      at += end.length;
    }
    if (value === '') fail(`option '${name}' has an empty value`);
    parsed.set(name!, value);
    if (text[at] === ',') {
      at += 1;
      continue;
    }
    if (at >= text.length) fail(`the line ends after the options: '${publicKeyType} <base64> [comment]' must follow`);
    if (!/\s/.test(text[at]!)) fail(`unexpected '${text[at]}' after option '${name}' (options are separated by ',' without spaces)`);
    return { parsed, end: at };
  }
}

function addCidr(list: BlockList, entry: string, fail: (message: string) => never): void {
  const [address = '', prefixText, extra] = entry.split('/');
  const family = isIP(address);
  const max = family === 4 ? 32 : 128;
  const prefix = prefixText === undefined ? max : /^\d{1,3}$/.test(prefixText) ? Number(prefixText) : -1;
  if (family === 0 || extra !== undefined || prefix < 0 || prefix > max)
    fail(`from: '${entry.slice(0, 60)}' is not an address or CIDR block, e.g. from="198.51.100.0/24,2001:db8::/32"`);
  list.addSubnet(address, prefix, family === 4 ? 'ipv4' : 'ipv6');
}

/** `::ffff:198.51.100.7` → `198.51.100.7`: a v4 client on a dual-stack socket is still a v4 client. */
export function normalizeAddress(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return mapped ? mapped[1]! : address;
}

export function addressAllowed(grant: Grant, client: string): boolean {
  if (!grant.from) return true;
  const address = normalizeAddress(client);
  const family = isIP(address);
  if (family === 0) return false;
  return grant.from.list.check(address, family === 4 ? 'ipv4' : 'ipv6');
}
