// Runs inside `unshare -m` with a tiny tmpfs mounted at argv[2]: fills that file system and reports,
// as one JSON line, how the real audit log behaves when the disk is full and once space is back.

import { unlinkSync, writeSync, openSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { openAuditLog, readAuditLog } from '../../adapters/audit-log.js';

const dir = process.argv[2]!;
const path = join(dir, 'audit.jsonl');
const outcome = async (promise: Promise<unknown>) =>
  promise.then(
    () => 'ok',
    (error: unknown) => (error instanceof Error ? `${error.name}: ${error.message}` : String(error)),
  );

const audit = await openAuditLog({ path, maxBytes: 1024 * 1024, keep: 1, gateway: 'SHA256:enospc', minFreeBytes: 16 * 1024 });
const event = (why: string) => ({ event: 'access.refused' as const, client: '198.51.100.1', status: 401, why });
const first = await outcome(audit.record(event('before the disk filled')));
// Fill the file system to the last byte (bounded: the tmpfs is small).
const filler = join(dir, 'filler');
const fd = openSync(filler, 'w');
const chunk = Buffer.alloc(4096, 1);
for (let i = 0; i < 100_000; i += 1) {
  try {
    writeSync(fd, chunk);
  } catch {
    break;
  }
}
closeSync(fd);
const full = await outcome(audit.record(event('x'.repeat(8192))));
const readyWhenFull = await outcome(audit.ready());
const whileFull = await readAuditLog(path);
unlinkSync(filler);
const readyAfter = await outcome(audit.ready());
const after = await outcome(audit.record(event('after space came back')));
const read = await readAuditLog(path);
await audit.close();
process.stdout.write(
  `${JSON.stringify({
    first,
    full,
    readyWhenFull,
    whileFull: { lines: whileFull.entries.length, problems: whileFull.problems.length },
    readyAfter,
    after,
    whys: read.entries.map(({ entry }) => (entry.event === 'access.refused' ? entry.why : '')),
    problems: read.problems.length,
  })}\n`,
);
