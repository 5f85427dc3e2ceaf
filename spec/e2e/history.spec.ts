// Every lifecycle is journalled: `history` explains how tunnels ended (including an owner killed with
// -9), and `replay` of each journal reproduces the recorded state path.

import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { echoServer, freePort, isAlive, pam, scratchDir, silentGateway, startGatewayProc, tunnelEnv, until } from '../support/processes.js';

const token = 'history-token-44e1';

t.test('history --json tells SIGTERM, timeout, command exit and kill -9 apart; replay reproduces each path', async (t) => {
  const dir = scratchDir(t);
  const echo = await echoServer(t);
  const gateway = await startGatewayProc(t, dir, token, { echo: echo.port });
  const env = tunnelEnv(dir, token, gateway.url);

  const signalled = pam(t, ['tunnel', 'start', 'echo', '-fg', '--json'], { env });
  const signalledId = String((await signalled.event('ready')).id);
  signalled.child.kill('SIGTERM');
  t.equal(await signalled.exited, 0);

  const silent = await silentGateway(t);
  const timedOut = pam(t, ['tunnel', 'start', 'echo', '--timeout', '1', '--json', '--gateway', silent.url], { env });
  t.equal(await timedOut.exited, 124);
  const timedOutId = String((await timedOut.event('stopped')).id);

  const three = pam(t, ['tunnel', 'start', 'echo', '--json', '-R', 'exit 3'], { env });
  t.equal(await three.exited, 3);
  const threeId = String((await three.event('stopped')).id);

  const doomed = pam(t, ['tunnel', 'start', 'echo', '-fg', '--json'], { env });
  const doomedId = String((await doomed.event('ready')).id);
  doomed.child.kill('SIGKILL');
  await doomed.exited;
  await until(() => !isAlive(doomed.pid), 5_000, 'owner death');

  const history = pam(t, ['tunnel', 'history', '--json'], { env });
  t.equal(await history.exited, 0, history.stderr);
  const rows = JSON.parse(history.stdout) as Array<{ id: string; exitCode: number | null; status: string; reason: string }>;
  const row = (id: string) => rows.find((candidate) => candidate.id === id);
  t.match(row(signalledId), { exitCode: 0, status: 'ended', reason: 'stopped by SIGTERM' });
  t.match(row(timedOutId), { exitCode: 124, status: 'ended', reason: /^connect timeout after 1 s in signalling/ });
  t.match(row(threeId), { exitCode: 3, status: 'ended', reason: 'wrapped command exited 3' });
  t.match(row(doomedId), {
    exitCode: null,
    status: 'died',
    reason: /^owner died without stopping \(pid \d+, last seen ready\.serving\.linked\)/,
  });

  for (const id of [signalledId, timedOutId, threeId, doomedId]) {
    const replayed = pam(t, ['tunnel', 'replay', id, '--json'], { env });
    t.equal(await replayed.exited, 0, `replay of ${id}: ${replayed.stderr}`);
    const result = JSON.parse(replayed.stdout) as { matches: boolean; recorded: string[]; replayed: string[] };
    t.ok(result.matches, `${id}: ${result.replayed.join(' → ')}`);
    t.same(result.replayed, result.recorded);
  }

  const journalDir = join(dir, 'registry', 'journal');
  const journals = readdirSync(journalDir);
  t.equal(journals.length, 4, 'one journal per tunnel');
  t.equal(statSync(journalDir).mode & 0o777, 0o700);
  for (const name of journals) {
    t.equal(statSync(join(journalDir, name)).mode & 0o777, 0o600, `${name} is 0600`);
    t.notMatch(
      readFileSync(join(journalDir, name), 'utf8'),
      new RegExp(`${token}|a=ice-pwd|fingerprint`),
      `${name} holds no token or SDP secret`,
    );
  }
});

t.test('a torn last line is skipped, and an edited journal no longer replays', async (t) => {
  const dir = scratchDir(t);
  const echo = await echoServer(t);
  const gateway = await startGatewayProc(t, dir, token, { echo: echo.port });
  const env = tunnelEnv(dir, token, gateway.url);
  const run = pam(t, ['tunnel', 'start', 'echo', '--json', '-R', 'exit 0'], { env });
  t.equal(await run.exited, 0);
  const id = String((await run.event('stopped')).id);
  const path = join(dir, 'registry', 'journal', `${id}.jsonl`);
  const { appendFileSync, writeFileSync } = await import('node:fs');
  appendFileSync(path, '{"seq":99,"at":"2026-');
  const timeline = pam(t, ['tunnel', 'history', id, '--json'], { env });
  t.equal(await timeline.exited, 0, timeline.stderr);
  t.equal(
    (JSON.parse(timeline.stdout) as unknown[]).length,
    readFileSync(path, 'utf8').split('\n').length - 1,
    'every whole line, not the torn one',
  );

  const lines = readFileSync(path, 'utf8')
    .split('\n')
    .filter((line) => line.startsWith('{"seq"') && line.endsWith('}'));
  const edited = lines.map((line) => line.replace('"command.exited","exit":{"exitCode":0}', '"link.lost","reason":"forged"'));
  writeFileSync(path, `${edited.join('\n')}\n`);
  const replayed = pam(t, ['tunnel', 'replay', id], { env });
  t.equal(await replayed.exited, 1, 'a different event sequence is reported as a divergence');
  t.match(replayed.stderr, /replay differs from the recording/);
});

t.test('an owner killed with -9 after idling shows how long it ran, not just until its last event', async (t) => {
  const dir = scratchDir(t);
  const echo = await echoServer(t);
  const gateway = await startGatewayProc(t, dir, token, { echo: echo.port });
  const env = tunnelEnv(dir, token, gateway.url);
  const doomed = pam(t, ['tunnel', 'start', 'echo', '-fg', '--json'], { env });
  const id = String((await doomed.event('ready')).id);
  const journal = join(dir, 'registry', 'journal', `${id}.jsonl`);
  const firstAt = Date.parse((JSON.parse(readFileSync(journal, 'utf8').split('\n')[0]!) as { at: string }).at);
  // No event happens while it idles; only its heartbeat says it is still there.
  await until(() => statSync(journal).mtimeMs - firstAt >= 3_000, 20_000, 'the journal to show 3 s of life');
  doomed.child.kill('SIGKILL');
  await doomed.exited;
  await until(() => !isAlive(doomed.pid), 5_000, 'owner death');
  const history = pam(t, ['tunnel', 'history', '--json'], { env });
  t.equal(await history.exited, 0, history.stderr);
  const row = (JSON.parse(history.stdout) as Array<{ id: string; status: string; durationSeconds: number }>).find(
    (candidate) => candidate.id === id,
  );
  t.equal(row?.status, 'died');
  t.ok((row?.durationSeconds ?? 0) >= 3, `died after at least 3 s of life, history says ${row?.durationSeconds} s`);
});

t.test('a target that refuses: the client gets a reset and pam says so in one stderr line; --run stdout stays clean', async (t) => {
  const dir = scratchDir(t);
  const closed = await freePort();
  const gateway = await startGatewayProc(t, dir, token, { closed });
  const env = tunnelEnv(dir, token, gateway.url);
  const client = `node -e "const s=require('net').connect(process.env.PAM_TUNNEL_PORT,'127.0.0.1');s.on('error',e=>{console.log('client:',e.code);});s.on('close',()=>console.log('client: closed'))"`;
  const run = pam(t, ['tunnel', 'start', 'closed', '-R', client], { env });
  t.equal(await run.exited, 0, run.stderr);
  t.match(run.stdout, /^(client: ECONNRESET\n)?client: closed\n$/, "stdout holds only the command's output");
  const lines = run.stderr.split('\n').filter((line) => /refused/.test(line));
  t.equal(lines.length, 1, `one line about the refusal: ${run.stderr}`);
  t.match(lines[0], new RegExp(`^pam: the target refused a connection \\(target 127\\.0\\.0\\.1:${closed}: ECONNREFUSED\\)`));
});
