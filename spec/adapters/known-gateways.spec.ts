// known_gateways with a list of URLs of one site (the site through several brokers): the key is the
// site's, checked against the record of every URL and recorded for each.

import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { createGatewayKeyCheck } from '../../adapters/known-gateways.js';
import { keyFingerprint } from '../../adapters/key-fingerprint.js';
import { scratchDir } from '../support/processes.js';

const siteKey = Buffer.alloc(32, 1);
const otherKey = Buffer.alloc(32, 2);
const list = 'http://b1.example:8443/sites/lab,http://b2.example:8443/sites/lab/';

t.test('a URL list is trusted for every URL of it, and a key recorded for any one of them binds the list', async (t) => {
  const file = join(scratchDir(t), 'known_gateways');
  const check = createGatewayKeyCheck({ file });
  check.verify(list, siteKey);
  check.trust(list, siteKey);
  t.equal(
    readFileSync(file, 'utf8'),
    `http://b1.example:8443/sites/lab ${keyFingerprint(siteKey)}\nhttp://b2.example:8443/sites/lab ${keyFingerprint(siteKey)}\n`,
    'one line per URL, same key',
  );
  check.verify('http://b2.example:8443/sites/lab', siteKey);
  t.throws(
    () => check.verify('http://b2.example:8443/sites/lab', otherKey),
    { name: 'TunnelError', message: /presents key/ },
    'one URL alone is bound too',
  );
  t.throws(
    () => check.verify('http://b3.example:8443/sites/lab,http://b1.example:8443/sites/lab', otherKey),
    { name: 'TunnelError', message: /records SHA256:\S+ for http:\/\/b1\.example:8443\/sites\/lab/ },
    "a new list that includes a known URL must show that URL's key",
  );
  check.trust('http://b3.example:8443/sites/lab,http://b1.example:8443/sites/lab', siteKey);
  t.equal(readFileSync(file, 'utf8').split('\n').filter(Boolean).length, 3, 'only the new URL is added');
});

t.test('a pin is the site key whichever URL of the list answers', async (t) => {
  const file = join(scratchDir(t), 'known_gateways');
  writeFileSync(file, '');
  const check = createGatewayKeyCheck({ file, pin: { fingerprint: keyFingerprint(siteKey), source: 'PAM_GATEWAY_KEY' } });
  check.verify(list, siteKey);
  t.throws(() => check.verify(list, otherKey), { name: 'TunnelError', message: /PAM_GATEWAY_KEY pins/ });
  check.trust(list, siteKey);
  t.equal(readFileSync(file, 'utf8'), '', 'a pinned key is not recorded');
});
