// A SOCKS stream is dialled at the addresses the policy checked, never at the name again: a name only
// the policy's resolver knows still connects, a refusal carries its SOCKS code and is logged once.

import t from 'tap';
import { DialRefusal, dialSocks } from '../../gateway/dial.js';
import { createSocksPolicy, parseSocksRules, socksReply } from '../../gateway/socks-policy.js';
import { freePort, tcpServer } from '../support/processes.js';
import type { TapTest } from '../support/tap.js';

/** A target that greets and closes. */
const listening = async (t: TapTest) => (await tcpServer(t, (socket) => socket.end('hi'))).port;

t.test('the checked address is dialled, not the name', async (t) => {
  const port = await listening(t);
  const closed = await freePort();
  const looked: string[] = [];
  const policy = createSocksPolicy({
    rules: parseSocksRules([`127.0.0.1:${port}`, `127.0.0.1:${closed}`]),
    // `only-the-policy-knows.invalid` resolves nowhere else: connecting by name would fail.
    resolve: async (name) => {
      looked.push(name);
      return [{ address: '127.0.0.1', family: 4 }];
    },
    ownAddresses: () => [],
  });
  const logged: string[] = [];
  const socket = await dialSocks(policy, { host: 'only-the-policy-knows.invalid', port }, (line) => logged.push(line));
  t.teardown(() => socket.destroy());
  t.equal(socket.remoteAddress, '127.0.0.1');
  t.same(looked, ['only-the-policy-knows.invalid'], 'resolved once, by the policy');

  const refused = await dialSocks(policy, { host: '127.0.0.1', port: closed }, (line) => logged.push(line)).catch(
    (error: unknown) => error,
  );
  t.ok(refused instanceof DialRefusal);
  t.match(refused, { replyCode: socksReply.connectionRefused, logged: true });
  const forbidden = await dialSocks(policy, { host: '127.0.0.1', port: port + 1 }, (line) => logged.push(line)).catch(
    (error: unknown) => error,
  );
  t.match(forbidden, { replyCode: socksReply.notAllowed, logged: true });
  t.match(logged, [/CONNECT 127\.0\.0\.1:\d+ failed \(reply 5\)/, /CONNECT 127\.0\.0\.1:\d+ refused \(reply 2\)/]);
});
