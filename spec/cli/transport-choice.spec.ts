// Which WebRTC library a tunnel uses when the only TURN on offer runs over TCP: libjuice (native)
// relays over UDP only, werift can use TURN over TCP.

import t from 'tap';
import { transportForTurn, type TransportChoice } from '../../cli/config.js';
import { turnOnlyOverTcp } from '../../adapters/ice-options.js';

const tcpTurn = [{ urls: 'stun:203.0.113.1:3478' }, { urls: 'turn:203.0.113.1:3478?transport=tcp', username: 'u', credential: 'c' }];
const both = [...tcpTurn, { urls: 'turn:203.0.113.1:3478', username: 'u', credential: 'c' }];
const nativeDefault: TransportChoice = { name: 'native', named: false };

t.test('TURN only over TCP: the default becomes werift with one line; native by name is refused naming the fix', async (t) => {
  const lines: string[] = [];
  t.same(
    transportForTurn(nativeDefault, tcpTurn, (line) => lines.push(line)),
    { name: 'werift', named: false },
  );
  t.match(lines, [/cannot use TURN over TCP .*; using werift, which can/]);
  t.throws(() => transportForTurn({ name: 'native', named: true }, tcpTurn, () => undefined), {
    kind: 'usage',
    message: /cannot use TURN over TCP .*: use --transport werift/,
  });
});

t.test('TURN over UDP on offer too, or no TURN at all: native stays, nothing said', async (t) => {
  const lines: string[] = [];
  t.same(
    transportForTurn(nativeDefault, both, (line) => lines.push(line)),
    nativeDefault,
  );
  t.same(
    transportForTurn(nativeDefault, [{ urls: 'stun:203.0.113.1:3478' }], (line) => lines.push(line)),
    nativeDefault,
  );
  t.same(
    transportForTurn({ name: 'werift', named: true }, tcpTurn, (line) => lines.push(line)),
    { name: 'werift', named: true },
  );
  t.same(lines, []);
  t.ok(turnOnlyOverTcp([{ urls: 'turns:203.0.113.1:5349' }]), 'turns: (TLS) is over TCP too');
  t.notOk(turnOnlyOverTcp([]), 'no TURN is not "TURN only over TCP"');
});

t.test('a broker handing out TURN only over TCP: the native offerer refuses with the fix instead of timing out in ICE', async (t) => {
  const { nativeKind } = await import('../../adapters/native-transport.js');
  await t.rejects(nativeKind({ hosts: ['127.0.0.1'] }).offer(new AbortController().signal, tcpTurn), {
    kind: 'usage',
    message: /cannot use TURN over TCP .*the only TURN the gateway's broker offers: use --transport werift/,
  });
});
