// The audit log file: each line on disk when record() resolves, in order under concurrency, rotation
// that keeps at most --audit-keep older files and never splits or drops a line in the files kept, the
// reader (rotated files oldest first, malformed lines reported by number), failure and healing.

import { appendFileSync, chmodSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { openAuditLog, readAuditLog } from '../../adapters/audit-log.js';
import { AuditUnavailable, matchesAudit, parseSince, type AuditLine } from '../../gateway/audit.js';
import { scratchDir } from '../support/processes.js';
import { skipBecause } from '../support/tap.js';

const gateway = 'SHA256:gatewaygatewaygatewaygatewaygatewaygatewaygat';
const refusal = (n: number) => ({ event: 'access.refused' as const, client: '198.51.100.7', status: 401, why: `try ${n}` });
const whys = (lines: readonly { entry: AuditLine }[]) => lines.map(({ entry }) => (entry.event === 'access.refused' ? entry.why : ''));

t.test('a line is on disk, whole, when record() resolves; the file is 0600 in a 0700 directory; order is kept', async (t) => {
  const dir = scratchDir(t);
  const path = join(dir, 'state', 'pam', 'audit.jsonl');
  const audit = await openAuditLog({ path, maxBytes: 1024 * 1024, keep: 2, gateway, site: 'lab' });
  t.teardown(() => audit.close());
  t.equal(statSync(path).mode & 0o777, 0o600);
  t.equal(statSync(join(dir, 'state', 'pam')).mode & 0o777, 0o700);
  await audit.record(refusal(0));
  const first = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  t.match(first, { event: 'access.refused', gateway, site: 'lab', client: '198.51.100.7', why: 'try 0' });
  t.ok(!Number.isNaN(Date.parse(String(first.time))), 'a timestamp');
  t.same(Object.keys(first).slice(0, 2), ['time', 'event'], 'time and event lead the line');
  await Promise.all(Array.from({ length: 50 }, (_, n) => audit.record(refusal(n + 1))));
  const { entries, problems } = await readAuditLog(path);
  t.same(problems, []);
  t.same(
    whys(entries),
    Array.from({ length: 51 }, (_, n) => `try ${n}`),
    'concurrent records land in call order',
  );
});

t.test('rotation keeps at most --audit-keep older files, never splits a line, and loses none of the lines it keeps', async (t) => {
  const dir = scratchDir(t);
  const path = join(dir, 'audit.jsonl');
  const maxBytes = 1000;
  const small = await openAuditLog({ path, maxBytes, keep: 3, gateway });
  await Promise.all(Array.from({ length: 200 }, (_, n) => small.record(refusal(n))));
  await small.close();
  const names = readdirSync(dir).sort();
  t.same(names, ['audit.jsonl', 'audit.jsonl.1', 'audit.jsonl.2', 'audit.jsonl.3'], 'the live file and 3 older ones');
  for (const name of names) t.ok(statSync(join(dir, name)).size <= maxBytes, `${name} is within --audit-max-mb`);
  const { entries, problems, files } = await readAuditLog(path);
  t.same(problems, [], 'every kept line is whole');
  t.same(
    files.map((file) => file.slice(dir.length + 1)),
    ['audit.jsonl.3', 'audit.jsonl.2', 'audit.jsonl.1', 'audit.jsonl'],
    'read oldest first',
  );
  const kept = whys(entries);
  const firstKept = Number(kept[0]!.slice(4));
  t.ok(firstKept > 0, 'the oldest lines were rotated away');
  t.same(
    kept,
    Array.from({ length: 200 - firstKept }, (_, n) => `try ${firstKept + n}`),
    'what is kept is every line from the oldest kept one to the newest, in order, none twice',
  );

  // With room enough, rotation drops nothing at all — and a lower --audit-keep later prunes the extra files.
  const roomy = join(dir, 'roomy', 'audit.jsonl');
  const big = await openAuditLog({ path: roomy, maxBytes, keep: 100, gateway });
  await Promise.all(Array.from({ length: 200 }, (_, n) => big.record(refusal(n))));
  await big.close();
  t.same(
    whys((await readAuditLog(roomy)).entries),
    Array.from({ length: 200 }, (_, n) => `try ${n}`),
    'all 200 lines, in order',
  );
  const rotatedBefore = readdirSync(join(dir, 'roomy')).length;
  t.ok(rotatedBefore > 4, `${rotatedBefore} files`);
  const fewer = await openAuditLog({ path: roomy, maxBytes, keep: 2, gateway });
  for (let n = 0; n < 20; n += 1) await fewer.record(refusal(1000 + n));
  await fewer.close();
  t.ok(readdirSync(join(dir, 'roomy')).length <= 3, 'a smaller --audit-keep prunes older files at the next rotation');
});

t.test('the reader reports a malformed line with its number and goes on', async (t) => {
  const dir = scratchDir(t);
  const path = join(dir, 'audit.jsonl');
  const audit = await openAuditLog({ path, maxBytes: 1024 * 1024, keep: 2, gateway });
  await audit.record(refusal(1));
  appendFileSync(
    path,
    'not json at all\n{"time":"yesterday","event":"tunnel.opened"}\n{"time":"2026-12-01T00:00:00Z","event":"weird"}\n[1,2]\n',
  );
  await audit.record(refusal(2));
  await audit.close();
  const { entries, problems } = await readAuditLog(path);
  t.same(whys(entries), ['try 1', 'try 2']);
  t.same(
    problems.map(({ line, reason }) => ({ line, reason })),
    [
      { line: 2, reason: 'not JSON' },
      { line: 3, reason: 'no valid "time"' },
      { line: 4, reason: 'no known "event"' },
      { line: 5, reason: 'not a JSON object' },
    ],
  );
  t.same(await readAuditLog(join(dir, 'nothing-here', 'audit.jsonl')), { entries: [], problems: [], files: [] }, 'no log: nothing');
});

t.test('a removed file is recreated; a path that cannot be written fails closed and heals once repaired', async (t) => {
  const dir = scratchDir(t);
  const logs = join(dir, 'logs');
  const path = join(logs, 'audit.jsonl');
  const told: string[] = [];
  const audit = await openAuditLog({ path, maxBytes: 1024 * 1024, keep: 2, gateway, log: (line) => told.push(line) });
  t.teardown(() => audit.close());
  await audit.record(refusal(1));
  unlinkSync(path);
  await audit.record(refusal(2));
  t.same(whys((await readAuditLog(path)).entries), ['try 2'], 'the line went to a new file at the path, not to the unlinked one');
  t.match(told, [/removed or replaced: reopening/]);

  // The directory replaced by a regular file: unwritable even for root.
  renameSync(logs, join(dir, 'logs.saved'));
  writeFileSync(logs, 'in the way\n');
  await t.rejects(audit.record(refusal(3)), AuditUnavailable, 'record() rejects');
  await t.rejects(
    audit.ready(),
    { name: 'AuditUnavailable', message: /cannot write its audit log \((ENOTDIR|EEXIST)\)/ },
    'ready() rejects',
  );
  t.equal(told.filter((line) => /cannot write the audit log/.test(line)).length, 1, 'the failure is logged once, not per attempt');
  unlinkSync(logs);
  renameSync(join(dir, 'logs.saved'), logs);
  await audit.ready();
  await audit.record(refusal(4));
  t.same(whys((await readAuditLog(path)).entries), ['try 2', 'try 4'], 'healed: lines are written again');
  t.match(told.at(-1), /can be written again/);
});

t.test('a log that cannot be opened at start, or that others can read, stops the gateway with a usage error', async (t) => {
  const dir = scratchDir(t);
  writeFileSync(join(dir, 'file'), '');
  await t.rejects(openAuditLog({ path: join(dir, 'file', 'audit.jsonl'), maxBytes: 1000, keep: 1, gateway }), {
    kind: 'usage',
    message: /pass --audit-log with a writable path/,
  });
  const open = join(dir, 'open.jsonl');
  writeFileSync(open, '');
  chmodSync(open, 0o644);
  await t.rejects(openAuditLog({ path: open, maxBytes: 1000, keep: 1, gateway }), /cannot write the audit log .*open\.jsonl \(EPERM\)/);
  mkdirSync(join(dir, 'a-dir.jsonl'));
  await t.rejects(openAuditLog({ path: join(dir, 'a-dir.jsonl'), maxBytes: 1000, keep: 1, gateway }), /EISDIR|EINVAL/);
});

t.test('--since takes ISO times and ages; filters by key, token and target', async (t) => {
  const now = new Date('2026-12-01T13:00:00Z');
  t.equal(parseSince('1h', now)?.toISOString(), '2026-12-01T12:00:00.000Z');
  t.equal(parseSince('30m', now)?.toISOString(), '2026-12-01T12:30:00.000Z');
  t.equal(parseSince('90s', now)?.toISOString(), '2026-12-01T12:58:30.000Z');
  t.equal(parseSince('2d', now)?.toISOString(), '2026-11-29T13:00:00.000Z');
  t.equal(parseSince('2026-12-01T10:00:00Z', now)?.toISOString(), '2026-12-01T10:00:00.000Z');
  for (const bad of ['', 'yesterday', '1y', '-1h', '2026-13-45']) t.equal(parseSince(bad, now), undefined, `'${bad}' is refused`);
  const base = { time: '2026-12-01T12:30:00Z', gateway, connection: 1 } as const;
  const byKey = {
    ...base,
    event: 'connection.opened',
    tunnel: 'a',
    target: 'db',
    who: { kind: 'key', fingerprint: 'SHA256:abc', comment: 'alice' },
  } as const;
  const byToken = { ...base, event: 'connection.opened', tunnel: 'b', target: 'web', who: { kind: 'token' } } as const;
  t.ok(matchesAudit(byKey, { key: 'SHA256:abc' }));
  t.ok(matchesAudit(byKey, { key: 'abc' }), 'the SHA256: prefix may be left out');
  t.notOk(matchesAudit(byToken, { key: 'abc' }));
  t.ok(matchesAudit(byToken, { key: 'token' }));
  t.ok(matchesAudit(byKey, { target: 'db', since: new Date('2026-12-01T12:00:00Z') }));
  t.notOk(matchesAudit(byKey, { target: 'web' }));
  t.notOk(matchesAudit(byKey, { since: new Date('2026-12-01T12:31:00Z') }));
});

t.test('a full disk (a tiny tmpfs in a private mount namespace): records fail closed, no partial line, and heal', async (t) => {
  const problem = process.getuid?.() !== 0 ? 'not running as root' : undefined;
  if (problem) {
    if (process.env.CI === 'true') t.fail(`ENOSPC test unavailable under CI: ${problem}`);
    else skipBecause(t, `ENOSPC test skipped: ${problem} (under CI=true this is a failure)`);
    return;
  }
  const dir = scratchDir(t);
  const child = join(dirname(fileURLToPath(import.meta.url)), '../support/audit-enospc-child.js');
  // The mount lives only in the child's private namespace: it is gone when the child exits.
  const run = spawnSync(
    'unshare',
    ['-m', 'sh', '-c', 'mount -t tmpfs -o size=256k pam-audit-spec "$1" && exec "$2" "$3" "$1"', 'sh', dir, process.execPath, child],
    { encoding: 'utf8', timeout: 30_000 },
  );
  t.equal(run.status, 0, run.stderr);
  const report = JSON.parse(run.stdout) as Record<string, unknown>;
  t.equal(report.first, 'ok');
  t.match(report.full, /^AuditUnavailable: the gateway cannot write its audit log \(ENOSPC\)/, 'record() rejects on a full disk');
  t.match(report.readyWhenFull, /\(ENOSPC\)/, 'ready() refuses too');
  t.same(report.whileFull, { lines: 1, problems: 0 }, 'the partial line was taken back');
  t.equal(report.readyAfter, 'ok');
  t.equal(report.after, 'ok');
  t.same(report.whys, ['before the disk filled', 'after space came back']);
  t.equal(report.problems, 0);
  t.same(readdirSync(dir), [], 'nothing was written outside the namespace (the mount is gone)');
});
