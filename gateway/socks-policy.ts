// Which destinations a SOCKS tunnel may reach: the `--socks-allow` grammar (HOST:PORTS rules) and the
// decision for one CONNECT. Names are resolved here and every resolved address is checked, so the
// caller dials addresses that passed, never the name again (docs/decisions/0013-socks.md).

import { BlockList, isIP } from 'node:net';

/** A refusal, with the SOCKS5 reply code (RFC 1928 §6) it maps to. */
export const socksReply = {
  generalFailure: 0x01,
  notAllowed: 0x02,
  networkUnreachable: 0x03,
  hostUnreachable: 0x04,
  connectionRefused: 0x05,
  ttlExpired: 0x06,
  commandNotSupported: 0x07,
  addressTypeNotSupported: 0x08,
} as const;

type Family = 'ipv4' | 'ipv6';

interface Network {
  readonly family: Family;
  /** The network address as written (normalised), and its prefix length. */
  readonly address: string;
  readonly prefix: number;
}

export type HostRule =
  | { readonly kind: 'any' }
  | { readonly kind: 'name'; readonly name: string }
  | { readonly kind: 'suffix'; readonly suffix: string }
  | ({ readonly kind: 'network' } & Network);

export interface SocksRule {
  /** The rule as given, for logs. */
  readonly text: string;
  readonly host: HostRule;
  readonly ports: { readonly from: number; readonly to: number };
}

export class SocksRuleError extends Error {
  override name = 'SocksRuleError';
}

const example = "e.g. '*.db.internal:5432', '192.0.2.0/24:22', 'host:8000-8100' or '[2001:db8::/32]:443'";
const labelPattern = /^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$/;

/** A DNS name as compared: lower case, no trailing dot; undefined if it is not a host name. */
export function normalName(text: string): string | undefined {
  const name = text.toLowerCase().replace(/\.$/, '');
  if (name.length === 0 || name.length > 253) return undefined;
  return name.split('.').every((label) => labelPattern.test(label)) ? name : undefined;
}

/** `::ffff:192.0.2.1` is the IPv4 address it carries: a rule or a refusal for one must hold for the other. */
export function normalAddress(address: string): { address: string; family: Family } | undefined {
  const bare = address.replace(/%.*$/, '');
  const version = isIP(bare);
  if (version === 4) return { address: bare, family: 'ipv4' };
  if (version !== 6) return undefined;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(bare) ?? /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/i.exec(bare);
  if (mapped?.[2] !== undefined) {
    const high = Number.parseInt(mapped[1]!, 16);
    const low = Number.parseInt(mapped[2], 16);
    return { address: `${high >> 8}.${high & 255}.${low >> 8}.${low & 255}`, family: 'ipv4' };
  }
  if (mapped?.[1] !== undefined) return { address: mapped[1], family: 'ipv4' };
  // The canonical (compressed, lower-case) text, as logs and rules show it.
  return { address: new URL(`http://[${bare}]`).hostname.slice(1, -1), family: 'ipv6' };
}

function parsePorts(text: string, rule: string): SocksRule['ports'] {
  if (text === '*') return { from: 1, to: 65535 };
  const match = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(text);
  const from = match ? Number(match[1]) : NaN;
  const to = match?.[2] !== undefined ? Number(match[2]) : from;
  if (!(from >= 1 && to <= 65535 && from <= to)) {
    throw new SocksRuleError(`--socks-allow '${rule}': the port must be N, N-M or * (1 to 65535, N ≤ M), ${example}`);
  }
  return { from, to };
}

function parseNetwork(text: string, rule: string): Network | undefined {
  const slash = text.indexOf('/');
  const addressText = slash >= 0 ? text.slice(0, slash) : text;
  const address = normalAddress(addressText);
  if (!address || addressText.includes('%')) return undefined;
  const max = address.family === 'ipv4' ? 32 : 128;
  // A mapped IPv6 CIDR (::ffff:a.b.c.d/120) is an IPv4 one after normalising: shift its prefix too.
  const shift = address.family === 'ipv4' && isIP(addressText) === 6 ? 96 : 0;
  const prefix = slash >= 0 ? Number(text.slice(slash + 1)) - shift : max;
  if (slash >= 0 && !/^\d{1,3}$/.test(text.slice(slash + 1))) {
    throw new SocksRuleError(`--socks-allow '${rule}': '${text.slice(slash + 1)}' is not a prefix length (0 to ${max})`);
  }
  if (!(Number.isInteger(prefix) && prefix >= 0 && prefix <= max)) {
    throw new SocksRuleError(
      `--socks-allow '${rule}': prefix /${text.slice(slash + 1)} is out of range for ${address.family} (0 to ${max})`,
    );
  }
  return { family: address.family, address: address.address, prefix };
}

/** One `--socks-allow` rule; throws SocksRuleError naming what is wrong with it. */
export function parseSocksRule(text: string): SocksRule {
  const rule = text.trim();
  let hostText: string;
  let portText: string;
  const bracketed = /^\[([^\]]+)\]:([^:]+)$/.exec(rule);
  if (bracketed) {
    hostText = bracketed[1]!;
    portText = bracketed[2]!;
  } else {
    const colon = rule.lastIndexOf(':');
    if (colon <= 0) throw new SocksRuleError(`--socks-allow '${text}' must be HOST:PORT, ${example}`);
    hostText = rule.slice(0, colon);
    portText = rule.slice(colon + 1);
    if (hostText.includes(':')) {
      throw new SocksRuleError(`--socks-allow '${text}': write an IPv6 address or network in brackets, e.g. '[2001:db8::/32]:443'`);
    }
  }
  const ports = parsePorts(portText, text);
  const host = parseHost(hostText, text, bracketed !== null);
  return { text: rule, host, ports };
}

function parseHost(hostText: string, rule: string, bracketed: boolean): HostRule {
  if (hostText === '*') return { kind: 'any' };
  const network = /^[0-9a-fA-F.:]+(\/\d+)?$/.test(hostText) ? parseNetwork(hostText, rule) : undefined;
  if (network) {
    if (bracketed && network.family === 'ipv4' && isIP(hostText.split('/')[0]!) === 4) {
      throw new SocksRuleError(`--socks-allow '${rule}': brackets are for IPv6; write an IPv4 address as 192.0.2.1:PORT`);
    }
    return { kind: 'network', ...network };
  }
  if (bracketed) throw new SocksRuleError(`--socks-allow '${rule}': '[${hostText}]' is not an IPv6 address or network`);
  if (/^[\d.]+(\/.*)?$/.test(hostText) || hostText.includes('/')) {
    throw new SocksRuleError(`--socks-allow '${rule}': '${hostText}' is not an IPv4 address or network`);
  }
  if (hostText.startsWith('*.')) {
    const suffix = normalName(hostText.slice(2));
    if (suffix) return { kind: 'suffix', suffix };
  } else {
    const name = normalName(hostText);
    if (name) return { kind: 'name', name };
  }
  throw new SocksRuleError(
    `--socks-allow '${rule}': '${hostText}' is not a host name, '*.domain', '*', an IPv4 address/network or a bracketed IPv6 one`,
  );
}

/** Every rule of a repeated flag, or a SocksRuleError for the first bad one. */
export function parseSocksRules(texts: readonly string[]): SocksRule[] {
  return texts.map(parseSocksRule);
}

/**
 * Addresses no wildcard or name rule reaches: only an IP/CIDR rule inside the same block does (a rule
 * `127.0.0.1:5432`, `169.254.169.254:80`, `[fe80::/64]:22`), never `*` or `0.0.0.0/0`.
 */
const specialBlocks: readonly Network[] = [
  { family: 'ipv4', address: '0.0.0.0', prefix: 8 }, // "this network", unspecified
  { family: 'ipv4', address: '127.0.0.0', prefix: 8 }, // loopback
  { family: 'ipv4', address: '169.254.0.0', prefix: 16 }, // link-local, cloud metadata (169.254.169.254)
  { family: 'ipv4', address: '224.0.0.0', prefix: 4 }, // multicast
  { family: 'ipv4', address: '240.0.0.0', prefix: 4 }, // reserved, broadcast
  { family: 'ipv6', address: '::', prefix: 128 }, // unspecified
  { family: 'ipv6', address: '::1', prefix: 128 }, // loopback
  { family: 'ipv6', address: 'fe80::', prefix: 10 }, // link-local
  { family: 'ipv6', address: 'ff00::', prefix: 8 }, // multicast
];

const contains = (outer: Network, address: string, family: Family): boolean => {
  if (outer.family !== family) return false;
  const list = new BlockList();
  list.addSubnet(outer.address, outer.prefix, outer.family);
  return list.check(address, family);
};

/** `inner` lies wholly within `outer`. */
const within = (inner: Network, outer: Network) => inner.prefix >= outer.prefix && contains(outer, inner.address, inner.family);

export interface Destination {
  /** A host name or an IP address, as the client asked. */
  readonly host: string;
  readonly port: number;
}

export interface ResolvedAddress {
  readonly address: string;
  readonly family: 4 | 6;
}

export type Resolve = (name: string) => Promise<readonly ResolvedAddress[]>;

export type SocksDecision =
  | { readonly allowed: true; readonly addresses: readonly ResolvedAddress[]; readonly rule: string }
  | { readonly allowed: false; readonly code: number; readonly reason: string };

export interface SocksPolicy {
  readonly rules: readonly SocksRule[];
  /**
   * Allowed, with the addresses to dial (every one checked), or refused with a SOCKS reply code.
   * `grant` (a principal's own rules, e.g. a key's socks="…") narrows it: a destination must then pass
   * both the gateway's rules and the grant, resolved once.
   */
  decide(destination: Destination, grant?: readonly SocksRule[]): Promise<SocksDecision>;
}

export interface SocksPolicyOptions {
  readonly rules: readonly SocksRule[];
  /** Name → addresses; the gateway passes dns.lookup(name, { all: true }). */
  readonly resolve: Resolve;
  /** The gateway's own interface addresses (os.networkInterfaces()), refused unless named literally. */
  readonly ownAddresses: () => readonly string[];
}

const portMatches = (rule: SocksRule, port: number) => port >= rule.ports.from && port <= rule.ports.to;

const nameMatches = (host: HostRule, name: string) =>
  host.kind === 'any' || (host.kind === 'name' && host.name === name) || (host.kind === 'suffix' && name.endsWith(`.${host.suffix}`));

export function createSocksPolicy(options: SocksPolicyOptions): SocksPolicy {
  /** The rule that admits `address` (reached as `name`, when a name was asked for), or why none does. */
  function admit(
    rules: readonly SocksRule[],
    source: string,
    address: string,
    family: Family,
    port: number,
    name: string | undefined,
  ): { rule: SocksRule } | { reason: string } {
    const own = options.ownAddresses().flatMap((text) => {
      const normal = normalAddress(text);
      return normal ? [normal] : [];
    });
    const special = specialBlocks.find((candidate) => contains(candidate, address, family));
    const isOwn = own.some((mine) => mine.address === address && mine.family === family);
    const block: Network | undefined = special ?? (isOwn ? { family, address, prefix: family === 'ipv4' ? 32 : 128 } : undefined);
    for (const rule of rules) {
      if (!portMatches(rule, port)) continue;
      if (rule.host.kind === 'network') {
        if (!contains(rule.host, address, family)) continue;
        if (block && !within(rule.host, block)) continue;
        return { rule };
      }
      if (block) continue;
      if (rule.host.kind === 'any' || (name !== undefined && nameMatches(rule.host, name))) return { rule };
    }
    const shown = literal(address, family);
    if (block) {
      const what = special ? `in ${literal(special.address, family)}/${special.prefix}` : "one of the gateway's own addresses";
      return { reason: `${shown}, which is ${what}: allowed only by a rule naming it (e.g. --socks-allow '${shown}:${port}')` };
    }
    return { reason: `${shown}, which no ${source} rule allows on port ${port}` };
  }

  return {
    rules: options.rules,
    async decide(destination, grant) {
      const lists: Array<[string, readonly SocksRule[]]> = [['--socks-allow', options.rules]];
      if (grant) lists.push(['socks= grant', grant]);
      const refused = (code: number, reason: string): SocksDecision => ({ allowed: false, code, reason });
      const { port } = destination;
      if (!(Number.isInteger(port) && port >= 1 && port <= 65535))
        return refused(socksReply.notAllowed, `port ${port} is not a port to connect to`);
      const literalAddress = normalAddress(destination.host);
      if (literalAddress) {
        let rule: SocksRule | undefined;
        for (const [source, rules] of lists) {
          const verdict = admit(rules, source, literalAddress.address, literalAddress.family, port, undefined);
          if ('reason' in verdict) return refused(socksReply.notAllowed, verdict.reason);
          rule ??= verdict.rule;
        }
        const family = literalAddress.family === 'ipv4' ? 4 : 6;
        return { allowed: true, addresses: [{ address: literalAddress.address, family }], rule: rule!.text };
      }
      const name = normalName(destination.host);
      if (!name) return refused(socksReply.hostUnreachable, `'${destination.host.slice(0, 64)}' is not a host name`);
      // A name no rule could admit is refused before it is looked up: the resolver learns nothing of it.
      const candidates = lists.map(
        ([source, rules]) =>
          [
            source,
            rules.filter((rule) => portMatches(rule, port) && (rule.host.kind === 'network' || nameMatches(rule.host, name))),
          ] as const,
      );
      for (const [source, rules] of candidates) {
        if (rules.length === 0) return refused(socksReply.notAllowed, `no ${source} rule allows ${name}:${port}`);
      }
      let resolved: readonly ResolvedAddress[];
      try {
        resolved = await options.resolve(name);
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code ?? String(error);
        return refused(socksReply.hostUnreachable, `${name} does not resolve (${code})`);
      }
      if (resolved.length === 0) return refused(socksReply.hostUnreachable, `${name} resolves to no address`);
      const addresses: ResolvedAddress[] = [];
      let rule: SocksRule | undefined;
      // Every address, not the first: a name that also resolves to a forbidden address is refused whole.
      for (const entry of resolved) {
        const normal = normalAddress(entry.address);
        if (!normal) return refused(socksReply.notAllowed, `${name} resolves to '${entry.address}', not an address`);
        for (const [source, rules] of candidates) {
          const verdict = admit(rules, source, normal.address, normal.family, port, name);
          if ('reason' in verdict) return refused(socksReply.notAllowed, `${name} resolves to ${verdict.reason}`);
          rule ??= verdict.rule;
        }
        addresses.push({ address: normal.address, family: normal.family === 'ipv4' ? 4 : 6 });
      }
      return { allowed: true, addresses, rule: rule!.text };
    },
  };
}

const literal = (address: string, family: Family) => (family === 'ipv6' ? `[${address}]` : address);
