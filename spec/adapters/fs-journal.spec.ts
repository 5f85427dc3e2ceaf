// Journal files: appended per event with a redacted projection, 0600, and pruned on open to the newest
// `keep` and nothing older than `maxAgeDays`.

import { readdirSync, readFileSync, statSync, utimesSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { createActor } from 'xstate';
import { journalDir, logDir, openJournal, readJournals } from '../../adapters/fs-journal.js';
import { inertTunnelMachine, replay } from '../../machines/journal.js';
import { scratchDir } from '../support/processes.js';

const input = { id: '0000aaaa', flags: { target: 'db', gateway: 'http://127.0.0.1:9', run: 'true' }, startedAt: 'T', interactive: false };

t.test('old journals are pruned on open: newest `keep` kept, none older than maxAgeDays', async (t) => {
  const registryDir = scratchDir(t);
  const dir = journalDir(registryDir);
  mkdirSync(dir, { recursive: true });
  const now = Date.now() / 1000;
  for (let i = 0; i < 6; i += 1) {
    const path = join(dir, `0000000${i}.jsonl`);
    writeFileSync(path, '{}\n');
    utimesSync(path, now - i * 60, now - i * 60); // 0 newest … 5 oldest
  }
  const ancient = join(dir, '000000ff.jsonl');
  writeFileSync(ancient, '{}\n');
  utimesSync(ancient, now - 40 * 86_400, now - 40 * 86_400);
  openJournal({ registryDir, meta: { id: '0000aaaa', pid: process.pid, startTime: 'x', input }, keep: 4, maxAgeDays: 30 });
  t.same(
    readdirSync(dir).sort(),
    ['00000000.jsonl', '00000001.jsonl', '00000002.jsonl'],
    'the 3 newest stay (one slot is for the new journal), the 40-day-old one goes',
  );
});

t.test('background logs are pruned with the journals of the same ids; the opening tunnel keeps its log', async (t) => {
  const registryDir = scratchDir(t);
  const dir = journalDir(registryDir);
  const logs = logDir(registryDir);
  mkdirSync(dir, { recursive: true });
  mkdirSync(logs, { recursive: true });
  const now = Date.now() / 1000;
  const age = (path: string, seconds: number) => utimesSync(path, now - seconds, now - seconds);
  for (let i = 0; i < 6; i += 1) {
    writeFileSync(join(dir, `0000000${i}.jsonl`), '{}\n');
    age(join(dir, `0000000${i}.jsonl`), i * 60);
    writeFileSync(join(logs, `0000000${i}.log`), '{}\n');
    age(join(logs, `0000000${i}.log`), i * 60);
  }
  writeFileSync(join(logs, '000000ee.log'), 'a log whose journal is gone\n');
  age(join(logs, '000000ee.log'), 40 * 86_400);
  writeFileSync(join(logs, '0000aaaa.log'), 'the launcher opened it just before the owner opens its journal\n');
  age(join(logs, '0000aaaa.log'), 40 * 86_400);
  openJournal({ registryDir, meta: { id: '0000aaaa', pid: process.pid, startTime: 'x', input }, keep: 4, maxAgeDays: 30 });
  t.same(
    readdirSync(logs).sort(),
    ['00000000.log', '00000001.log', '00000002.log', '0000aaaa.log'],
    'logs follow their journals; an orphan past the age goes',
  );
  t.same(readdirSync(dir).sort(), ['00000000.jsonl', '00000001.jsonl', '00000002.jsonl'], 'the journals as before');
});

t.test('each event is one 0600 line, redacted, and the journal replays', async (t) => {
  const registryDir = scratchDir(t);
  const journal = openJournal({ registryDir, meta: { id: '0000aaaa', pid: process.pid, startTime: 'x', input } });
  const actor = createActor(inertTunnelMachine, { input, inspect: journal.inspect });
  actor.start();
  actor.send({ type: 'tunnel.start' });
  actor.send({ type: 'xstate.done.actor.claim', output: [{ host: '127.0.0.1', port: 4444, secret: 'should not be kept' }] } as never);
  actor.send({
    type: 'xstate.error.actor.negotiate',
    error: Object.assign(new Error('token refused'), { name: 'TunnelError', kind: 'authRefused' }),
  } as never);
  actor.stop();
  const text = readFileSync(journal.path, 'utf8');
  t.equal(statSync(journal.path).mode & 0o777, 0o600);
  t.same(
    text
      .split('\n')
      .filter(Boolean)
      .map((line) => (JSON.parse(line) as { event: { type: string } }).event.type),
    ['xstate.init', 'tunnel.start', 'xstate.done.actor.claim', 'xstate.error.actor.negotiate', 'xstate.stop'],
    'one line per event, the actor being stopped included',
  );
  t.notMatch(text, /should not be kept/, 'only host and port of an actor output are kept');
  t.match(text, /"error":\{"kind":"authRefused","message":"token refused"\}/);
  const [read] = readJournals(registryDir);
  t.same(
    replay(read!.entries).replayed,
    ['idle', 'connecting.claiming', 'connecting.negotiating', 'stopping', 'stopping'],
    'the recorded path replays',
  );
  t.ok(replay(read!.entries).matches);
});

t.test('a journal written before several targets per start (one listener, not a list) still replays', async (t) => {
  const registryDir = scratchDir(t);
  const journal = openJournal({ registryDir, meta: { id: '0000bbbb', pid: process.pid, startTime: 'x', input } });
  const actor = createActor(inertTunnelMachine, { input, inspect: journal.inspect });
  actor.start();
  actor.send({ type: 'tunnel.start' });
  actor.send({ type: 'xstate.done.actor.claim', output: [{ host: '127.0.0.1', port: 4444 }] } as never);
  actor.stop();
  const current = replay(readJournals(registryDir)[0]!.entries).replayed;
  t.same(current.slice(0, 3), ['idle', 'connecting.claiming', 'connecting.negotiating']);
  // Rewrite the claim line as older versions wrote it: the listener's address as one object.
  const lines = readFileSync(journal.path, 'utf8').replace(
    '"output":[{"host":"127.0.0.1","port":4444}]',
    '"output":{"host":"127.0.0.1","port":4444}',
  );
  t.match(lines, /"output":\{"host":"127\.0\.0\.1","port":4444\}/, 'the old shape is in the file');
  writeFileSync(journal.path, lines);
  const [read] = readJournals(registryDir);
  t.same(replay(read!.entries).replayed, current, 'the same path as the list the machine reads now');
  t.ok(replay(read!.entries).matches);
});
