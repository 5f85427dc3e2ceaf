// The gateway over HTTPS: a client that trusts the certificate tunnels as usual; one that does not
// is refused with 69 naming the certificate problem. Flags that need each other are checked.

import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import t from 'tap';
import { echoServer, pam, scratchDir, tunnelEnv } from '../support/processes.js';

const token = 'tls-token-a9d0-b1c2';

t.test('signalling over TLS with --tls-cert/--tls-key', async (t) => {
  const dir = scratchDir(t);
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-days',
      '1',
      '-subj',
      '/CN=127.0.0.1',
      '-addext',
      'subjectAltName=IP:127.0.0.1',
      '-keyout',
      key,
      '-out',
      cert,
    ],
    { stdio: 'ignore' },
  );
  const echo = await echoServer(t);
  const env = tunnelEnv(dir, token);
  const gateway = pam(
    t,
    ['gateway', '--listen', '127.0.0.1:0', '--json', '--tls-cert', cert, '--tls-key', key, '--target', `echo=127.0.0.1:${echo.port}`],
    { env },
  );
  const url = String((await gateway.event('listening')).url);
  t.match(url, /^https:\/\/127\.0\.0\.1:\d+$/);

  const trusted = pam(t, ['tunnel', 'start', 'echo', '--gateway', url, '-R', 'exit 6'], { env: { ...env, NODE_EXTRA_CA_CERTS: cert } });
  t.equal(await trusted.exited, 6, `a client trusting the certificate tunnels: ${trusted.stderr}`);
  const untrusted = pam(t, ['tunnel', 'start', 'echo', '--gateway', url, '-R', 'exit 6'], { env });
  t.equal(await untrusted.exited, 69);
  t.match(
    untrusted.stderr,
    /unreachable \((DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY_LEAF_SIGNATURE)/,
    'the certificate problem is named',
  );

  const half = pam(t, ['gateway', '--tls-cert', cert, '--target', 'echo=127.0.0.1:1'], { env });
  t.equal(await half.exited, 2);
  t.match(half.stderr, /--tls-cert and --tls-key go together/);
  const badIce = pam(t, ['tunnel', 'start', 'echo', '--gateway', url, '--ice-server', 'http://x', '-R', 'true'], { env });
  t.equal(await badIce.exited, 2);
  t.match(badIce.stderr, /--ice-server 'http:\/\/x' must be stun:/);
  const turnWithoutCredentials = pam(
    t,
    ['tunnel', 'start', 'echo', '--gateway', url, '--ice-server', 'turn:127.0.0.1:3478', '-R', 'true'],
    { env },
  );
  t.equal(await turnWithoutCredentials.exited, 2);
  t.match(turnWithoutCredentials.stderr, /needs PAM_ICE_USERNAME and PAM_ICE_CREDENTIAL/);
});
