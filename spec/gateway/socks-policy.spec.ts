// The --socks-allow grammar and the decision for one CONNECT, with an injected resolver: wildcards,
// networks, port ranges, IPv6, every resolved address checked, and the default-deny blocks.

import t from 'tap';
import {
  createSocksPolicy,
  parseSocksRule,
  parseSocksRules,
  type ResolvedAddress,
  SocksRuleError,
  socksReply,
} from '../../gateway/socks-policy.js';

const zone: Record<string, ResolvedAddress[]> = {
  'a.db.internal': [{ address: '198.51.100.7', family: 4 }],
  'b.db.internal': [
    { address: '198.51.100.8', family: 4 },
    { address: '2001:db8::8', family: 6 },
  ],
  // A name under an allowed suffix that also resolves to loopback: the DNS-rebinding case.
  'rebind.db.internal': [
    { address: '198.51.100.9', family: 4 },
    { address: '127.0.0.1', family: 4 },
  ],
  'meta.db.internal': [{ address: '169.254.169.254', family: 4 }],
  'mapped.db.internal': [{ address: '::ffff:127.0.0.1', family: 6 }],
  'self.db.internal': [{ address: '198.51.100.1', family: 4 }],
  localhost: [
    { address: '127.0.0.1', family: 4 },
    { address: '::1', family: 6 },
  ],
  'web.example': [{ address: '203.0.113.80', family: 4 }],
};

function policy(rules: string[]) {
  const looked: string[] = [];
  const made = createSocksPolicy({
    rules: parseSocksRules(rules),
    resolve: async (name) => {
      looked.push(name);
      const found = zone[name];
      if (!found) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${name}`), { code: 'ENOTFOUND' });
      return found;
    },
    ownAddresses: () => ['198.51.100.1', 'fe80::1%eth0', '127.0.0.1'],
  });
  return { policy: made, looked };
}

t.test('the grammar: names, wildcards, networks, ranges and IPv6 in brackets', async (t) => {
  t.same(parseSocksRule('*.db.internal:5432'), {
    text: '*.db.internal:5432',
    host: { kind: 'suffix', suffix: 'db.internal' },
    ports: { from: 5432, to: 5432 },
  });
  t.same(parseSocksRule('192.0.2.0/24:22').host, { kind: 'network', family: 'ipv4', address: '192.0.2.0', prefix: 24 });
  t.same(parseSocksRule('Host.Example.:8000-8100'), {
    text: 'Host.Example.:8000-8100',
    host: { kind: 'name', name: 'host.example' },
    ports: { from: 8000, to: 8100 },
  });
  t.same(parseSocksRule('[2001:db8::/32]:443').host, { kind: 'network', family: 'ipv6', address: '2001:db8::', prefix: 32 });
  t.same(parseSocksRule('[::1]:22').host, { kind: 'network', family: 'ipv6', address: '::1', prefix: 128 });
  t.same(parseSocksRule('127.0.0.1:*').ports, { from: 1, to: 65535 });
  t.same(parseSocksRule('*:443').host, { kind: 'any' });
  t.same(parseSocksRule('[::ffff:127.0.0.1]:80').host, { kind: 'network', family: 'ipv4', address: '127.0.0.1', prefix: 32 });
  t.same(parseSocksRule('cafe:80').host, { kind: 'name', name: 'cafe' }, 'a name made of hex digits is still a name');
});

t.test('bad rules are refused with a message naming the rule and the fix', async (t) => {
  const bad: Array<[string, RegExp]> = [
    ['db.internal', /must be HOST:PORT/],
    [':5432', /must be HOST:PORT/],
    ['db:0', /1 to 65535/],
    ['db:70000', /1 to 65535/],
    ['db:8100-8000', /N ≤ M/],
    ['db:http', /port must be/],
    ['192.0.2.0/33:22', /out of range/],
    ['192.0.2.0/x:22', /not an IPv4 address or network/],
    ['300.1.2.3:22', /not an IPv4 address/],
    ['2001:db8::1:443', /in brackets/],
    ['[192.0.2.1]:22', /brackets are for IPv6/],
    ['[not-v6]:22', /not an IPv6 address/],
    ['[2001:db8::/129]:443', /out of range/],
    ['*.:22', /not a host name/],
    ['a..b:22', /not a host name/],
    ['-bad.example:22', /not a host name/],
    ['db*.internal:22', /not a host name/],
    ['fe80::1%eth0:22', /brackets/],
  ];
  for (const [text, message] of bad) {
    t.throws(() => parseSocksRule(text), SocksRuleError, text);
    t.throws(() => parseSocksRule(text), { message }, `${text}: ${message}`);
  }
  t.throws(() => parseSocksRules(['*.db.internal:5432', 'oops']), { message: /'oops'/ }, 'a list names its bad rule');
});

t.test('names: a wildcard matches below its suffix only, on its ports only', async (t) => {
  const { policy: p, looked } = policy(['*.db.internal:5432', 'web.example:8000-8100']);
  t.match(await p.decide({ host: 'a.db.internal', port: 5432 }), {
    allowed: true,
    addresses: [{ address: '198.51.100.7', family: 4 }],
    rule: '*.db.internal:5432',
  });
  t.match(await p.decide({ host: 'B.DB.INTERNAL.', port: 5432 }), {
    allowed: true,
    addresses: [
      { address: '198.51.100.8', family: 4 },
      { address: '2001:db8::8', family: 6 },
    ],
  });
  t.match(await p.decide({ host: 'a.db.internal', port: 5433 }), { allowed: false, code: socksReply.notAllowed });
  t.match(await p.decide({ host: 'db.internal', port: 5432 }), { allowed: false, code: socksReply.notAllowed });
  t.match(await p.decide({ host: 'evildb.internal', port: 5432 }), { allowed: false, code: socksReply.notAllowed });
  t.match(await p.decide({ host: 'web.example', port: 8050 }), { allowed: true, addresses: [{ address: '203.0.113.80' }] });
  t.match(await p.decide({ host: 'web.example', port: 8101 }), { allowed: false, code: socksReply.notAllowed });
  t.notOk(looked.includes('db.internal'), 'a name no rule could allow is never looked up');
  t.match(await p.decide({ host: 'gone.db.internal', port: 5432 }), {
    allowed: false,
    code: socksReply.hostUnreachable,
    reason: /does not resolve \(ENOTFOUND\)/,
  });
  t.match(await p.decide({ host: 'not a name', port: 5432 }), { allowed: false, code: socksReply.hostUnreachable });
  t.match(await p.decide({ host: 'a.db.internal', port: 0 }), { allowed: false, code: socksReply.notAllowed });
});

t.test('every resolved address is checked: one forbidden address refuses the name', async (t) => {
  const { policy: p } = policy(['*.db.internal:5432', '*:5432']);
  t.match(await p.decide({ host: 'rebind.db.internal', port: 5432 }), {
    allowed: false,
    code: socksReply.notAllowed,
    reason: /resolves to 127\.0\.0\.1, which is in 127\.0\.0\.0\/8/,
  });
  t.match(await p.decide({ host: 'meta.db.internal', port: 5432 }), { allowed: false, reason: /169\.254\.169\.254/ });
  t.match(await p.decide({ host: 'mapped.db.internal', port: 5432 }), { allowed: false, reason: /127\.0\.0\.1/ }, 'IPv4-mapped loopback');
  t.match(await p.decide({ host: 'self.db.internal', port: 5432 }), { allowed: false, reason: /gateway's own addresses/ });
  t.match(await p.decide({ host: 'localhost', port: 5432 }), { allowed: false, code: socksReply.notAllowed });
});

t.test('loopback, link-local, unspecified and own addresses need a literal IP/CIDR rule', async (t) => {
  const { policy: wide } = policy(['*:*', '0.0.0.0/0:*', '[::/0]:*']);
  for (const host of [
    '127.0.0.1',
    '127.1.2.3',
    '::1',
    '0.0.0.0',
    '::',
    '169.254.169.254',
    'fe80::1',
    '198.51.100.1',
    '::ffff:127.0.0.1',
    '224.0.0.1',
  ]) {
    t.match(await wide.decide({ host, port: 80 }), { allowed: false, code: socksReply.notAllowed }, `${host} refused by wildcards`);
  }
  t.match(await wide.decide({ host: '198.51.100.2', port: 80 }), { allowed: true }, 'an ordinary address passes the wildcard');
  t.match(await wide.decide({ host: '2001:db8::2', port: 80 }), { allowed: true });

  const { policy: literal } = policy(['127.0.0.1:5432', '[::1]:5432', '169.254.169.254:80', '[fe80::/64]:22', '198.51.100.1:22']);
  t.match(await literal.decide({ host: '127.0.0.1', port: 5432 }), { allowed: true, addresses: [{ address: '127.0.0.1', family: 4 }] });
  t.match(await literal.decide({ host: '::ffff:127.0.0.1', port: 5432 }), { allowed: true, addresses: [{ address: '127.0.0.1' }] });
  t.match(await literal.decide({ host: '::1', port: 5432 }), { allowed: true, addresses: [{ address: '::1', family: 6 }] });
  t.match(await literal.decide({ host: '::1', port: 5433 }), { allowed: false });
  t.match(await literal.decide({ host: '127.0.0.2', port: 5432 }), { allowed: false });
  t.match(await literal.decide({ host: '169.254.169.254', port: 80 }), { allowed: true });
  t.match(await literal.decide({ host: 'fe80::abcd', port: 22 }), { allowed: true });
  t.match(await literal.decide({ host: '198.51.100.1', port: 22 }), { allowed: true }, 'own address named exactly');
  const { policy: broad } = policy(['198.51.100.0/24:22', '127.0.0.0/8:*']);
  t.match(
    await broad.decide({ host: '198.51.100.1', port: 22 }),
    { allowed: false, reason: /own addresses/ },
    'a network is not naming it',
  );
  t.match(await broad.decide({ host: '198.51.100.2', port: 22 }), { allowed: true });
  t.match(await broad.decide({ host: '127.9.9.9', port: 1 }), { allowed: true }, 'a rule inside the loopback block names loopback');
  t.match(await broad.decide({ host: 'localhost', port: 22 }), { allowed: false }, '::1 of localhost has no rule');
  const { policy: both } = policy(['127.0.0.1:22', '[::1]:22']);
  t.match(await both.decide({ host: 'localhost', port: 22 }), { allowed: true, addresses: [{ address: '127.0.0.1' }, { address: '::1' }] });
});

t.test('IPv6 networks, and a grant that narrows the gateway rules', async (t) => {
  const { policy: p } = policy(['[2001:db8::/32]:443']);
  t.match(await p.decide({ host: '2001:db8:1::5', port: 443 }), { allowed: true });
  t.match(await p.decide({ host: '2001:db9::5', port: 443 }), { allowed: false });
  t.match(await p.decide({ host: 'b.db.internal', port: 443 }), { allowed: false }, '198.51.100.8 of the name is outside the network');
  const { policy: wide, looked } = policy(['*.db.internal:5432', '[2001:db8::/32]:443']);
  const grant = parseSocksRules(['a.db.internal:5432']);
  t.match(await wide.decide({ host: 'a.db.internal', port: 5432 }, grant), { allowed: true }, 'allowed by both');
  t.match(await wide.decide({ host: 'b.db.internal', port: 5432 }, grant), {
    allowed: false,
    reason: /no socks= grant rule allows b\.db\.internal:5432/,
  });
  t.notOk(looked.includes('b.db.internal'), 'not looked up when the grant cannot allow it');
  t.match(await wide.decide({ host: '2001:db8::5', port: 443 }, grant), { allowed: false, reason: /socks= grant/ });
  t.match(
    await p.decide({ host: 'a.db.internal', port: 5432 }, grant),
    { allowed: false, reason: /--socks-allow/ },
    'a grant cannot widen',
  );
});
