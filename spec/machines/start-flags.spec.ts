// Flag validation decides usage errors for both the tunnel and the launcher machines.

import t from 'tap';
import { isTargetName, parseStartFlags, socksTarget } from '../../machines/start-flags.js';
import { selectTunnels } from '../../machines/selector.js';
import type { RegistryEntry } from '../../machines/ports.js';

const base = { target: 'db', gateway: 'http://127.0.0.1:8765' };

t.test('valid flags resolve defaults: foreground, 127.0.0.1, any free port, 30 s', async (t) => {
  const parsed = parseStartFlags(base);
  t.same(parsed, {
    ok: true,
    settings: {
      target: 'db',
      gateway: 'http://127.0.0.1:8765',
      host: '127.0.0.1',
      port: 0,
      mode: 'foreground',
      timeoutMs: 30_000,
      reconnectAttempts: 5,
    },
  });
});

t.test('usage errors name the fix in one line', async (t) => {
  const cases: Array<[string, Record<string, unknown>, RegExp]> = [
    ['-fg -bg', { foreground: true, background: true }, /--foreground and --background cannot be combined/],
    ['-fg -R', { foreground: true, run: 'x' }, /--foreground and --run cannot be combined/],
    ['-bg -R', { background: true, run: 'x' }, /--background and --run cannot be combined/],
    ['empty --run', { run: '  ' }, /--run needs a command/],
    ['--timeout 0', { timeout: '0' }, /--timeout '0' must be a positive number/],
    ['--timeout abc', { timeout: 'abc' }, /--timeout 'abc'/],
    ['--timeout -5', { timeout: '-5' }, /--timeout '-5'/],
    ['--reconnect-attempts 101', { reconnectAttempts: '101' }, /--reconnect-attempts '101' must be a whole number from 0/],
    ['--reconnect-attempts -1', { reconnectAttempts: '-1' }, /--reconnect-attempts/],
    ['--port 70000', { port: '70000' }, /--port '70000' is not a port/],
    ['--port abc', { port: 'abc' }, /--port 'abc'/],
    ['--port -1', { port: '-1' }, /--port '-1'/],
    ['bad target', { target: '../etc' }, /not a valid target name/],
    ['no gateway', { gateway: undefined }, /no gateway given.*PAM_GATEWAY_URL/],
    ['gateway not a URL', { gateway: 'ftp://x' }, /not an http\(s\) URL/],
    ['empty --pid-file', { pidFile: '' }, /--pid-file needs a path/],
    ['--host with space', { host: 'a b' }, /--host 'a b'/],
  ];
  for (const [name, flags, message] of cases) {
    const parsed = parseStartFlags({ ...base, ...flags } as never);
    t.equal(parsed.ok, false, `${name} is refused`);
    if (!parsed.ok) {
      t.equal(parsed.failure.exitCode, 2, `${name} exits 2`);
      t.match(parsed.failure.reason, message, `${name} message`);
      t.notMatch(parsed.failure.reason, /\n/, `${name}: one line`);
    }
  }
});

t.test('fractional timeouts and explicit ports are accepted', async (t) => {
  const parsed = parseStartFlags({ ...base, timeout: '2.5', port: '15432', run: 'psql' });
  t.ok(parsed.ok);
  if (parsed.ok) {
    t.equal(parsed.settings.timeoutMs, 2500);
    t.equal(parsed.settings.port, 15432);
    t.equal(parsed.settings.mode, 'run');
    t.equal(parsed.settings.command, 'psql');
  }
});

t.test('inside pam shell, -fg/-bg are skipped (mode shell) and --run still runs', async (t) => {
  const bg = parseStartFlags({ ...base, background: true, inShell: true });
  t.ok(bg.ok && bg.settings.mode === 'shell' && bg.settings.skipped === '--background');
  const run = parseStartFlags({ ...base, run: 'true', inShell: true });
  t.ok(run.ok && run.settings.mode === 'run' && run.settings.skipped === undefined);
});

const entry = (pid: number, tunnels: Array<{ id: string; target: string; port: number }>): RegistryEntry => ({
  schema: 1,
  pid,
  startTime: '1',
  hostname: 'h',
  tunnels: tunnels.map((tunnel) => ({
    ...tunnel,
    gateway: 'g',
    host: '127.0.0.1',
    mode: 'background',
    state: 'ready',
    reconnects: 0,
    startedAt: 'T',
  })),
});

t.test('stop selectors: id, unique prefix, target, port, pid; ambiguity lists candidates', async (t) => {
  const entries = [
    entry(100, [{ id: 'aaaa1111', target: 'web', port: 8080 }]),
    entry(200, [
      { id: 'aaaa2222', target: 'db', port: 5432 },
      { id: 'bbbb3333', target: 'db', port: 5433 },
    ]),
  ];
  const ids = (selector: string) => {
    const selection = selectTunnels(entries, selector);
    return selection.ok ? selection.selected.map((s) => s.tunnel.id) : selection.failure.exitCode;
  };
  t.same(ids('aaaa1111'), ['aaaa1111'], 'exact id');
  t.same(ids('bbbb'), ['bbbb3333'], 'unique prefix');
  t.same(ids('web'), ['aaaa1111'], 'target name');
  t.same(ids('5433'), ['bbbb3333'], 'local port');
  t.same(ids('200'), ['aaaa2222', 'bbbb3333'], 'owner pid selects all its tunnels');
  t.equal(ids('aaaa'), 2, 'ambiguous prefix is a usage error');
  t.equal(ids('db'), 2, 'a target served by two tunnels is ambiguous');
  t.equal(ids('nothing'), 1, 'nothing matching exits 1');
  const ambiguous = selectTunnels(entries, 'db');
  t.match(!ambiguous.ok && ambiguous.failure.reason, /aaaa2222.*bbbb3333/, 'candidates are listed');
});

t.test('gateway URLs: credentials refused without echoing them, a path kept, the source named', async (t) => {
  const secret = parseStartFlags({ ...base, gateway: 'http://user:hunter2-secret@127.0.0.1:8765/pam' });
  t.equal(secret.ok, false);
  if (!secret.ok) {
    t.match(
      secret.failure.reason,
      /--gateway must not carry credentials .*http:\/\/127\.0\.0\.1:8765\/pam .*PAM_GATEWAY_TOKEN or --token-file/,
    );
    t.notMatch(secret.failure.reason, /hunter2/);
  }
  const unparsable = parseStartFlags({ ...base, gateway: 'http://user:hunter2-secret@' });
  t.ok(!unparsable.ok && !unparsable.failure.reason.includes('hunter2'), 'not echoed when the URL does not parse either');
  const fromEnv = parseStartFlags({ ...base, gateway: 'ftp://x', gatewaySource: 'PAM_GATEWAY_URL' });
  t.ok(!fromEnv.ok && /^PAM_GATEWAY_URL 'ftp:\/\/x'/.test(fromEnv.failure.reason), 'a bad PAM_GATEWAY_URL is named as such');
  const query = parseStartFlags({ ...base, gateway: 'http://127.0.0.1:8765/?a=b' });
  t.ok(!query.ok && /query or fragment/.test(query.failure.reason));
  const path = parseStartFlags({ ...base, gateway: 'http://127.0.0.1:8765/pam/' });
  t.ok(path.ok && path.settings.gateway === 'http://127.0.0.1:8765/pam', 'the path is kept (trailing slash dropped)');
});

t.test("a comma-separated list of one site's URLs: each checked, each normalized, none empty", async (t) => {
  const list = parseStartFlags({ ...base, gateway: ' http://b1:8443/sites/lab/ , https://b2:8443/sites/lab' });
  t.ok(list.ok && list.settings.gateway === 'http://b1:8443/sites/lab,https://b2:8443/sites/lab', 'trimmed, trailing slashes dropped');
  const secret = parseStartFlags({ ...base, gateway: 'http://b1:8443/sites/lab,http://u:hunter2-secret@b2:8443/sites/lab' });
  t.ok(!secret.ok && /must not carry credentials/.test(secret.failure.reason), 'credentials in any URL of the list are refused');
  t.notMatch(secret.ok ? '' : secret.failure.reason, /hunter2/, 'without echoing them');
  const empty = parseStartFlags({ ...base, gateway: 'http://b1:8443/sites/lab,,http://b2:8443/sites/lab' });
  t.ok(!empty.ok && /lists an empty URL/.test(empty.failure.reason));
  const bad = parseStartFlags({ ...base, gateway: 'http://b1:8443/sites/lab,ftp://b2' });
  t.ok(!bad.ok && /'ftp:\/\/b2' is not an http\(s\) URL/.test(bad.failure.reason), 'the bad one is named');
});

t.test('--host [::1] is ::1; a timeout below 1 s is refused, naming the minimum', async (t) => {
  const bracketed = parseStartFlags({ ...base, host: '[::1]' });
  t.ok(bracketed.ok && bracketed.settings.host === '::1');
  const unbalanced = parseStartFlags({ ...base, host: '[::1' });
  t.ok(!unbalanced.ok && /--host '\[::1'/.test(unbalanced.failure.reason));
  const tiny = parseStartFlags({ ...base, timeout: '0.0001' });
  t.ok(!tiny.ok && /--timeout '0\.0001' is too short: a connect needs at least 1 s/.test(tiny.failure.reason));
  t.ok(parseStartFlags({ ...base, timeout: '1' }).ok, '1 s is accepted');
});

t.test('--socks: no target, the reserved @socks target in settings; a target with it, or neither, is a usage error', async (t) => {
  const parsed = parseStartFlags({ ...base, target: '', socks: true });
  t.match(parsed, { ok: true, settings: { target: socksTarget, socks: true, mode: 'foreground' } });
  t.notOk(isTargetName(socksTarget), 'no gateway --target name can be the SOCKS target');
  t.match(parseStartFlags({ ...base, socks: true }), { ok: false, failure: { kind: 'usage', reason: /--socks takes no target/ } });
  t.match(parseStartFlags({ ...base, target: '' }), { ok: false, failure: { kind: 'usage', reason: /name a target .* or pass --socks/ } });
});

t.test('--reason and --ticket: kept trimmed; empty, multi-line, overlong or a ticket alone refused', async (t) => {
  const parsed = parseStartFlags({ ...base, reason: '  restore after INC-7 ', ticket: 'INC-7' });
  t.match(parsed, { ok: true, settings: { reason: 'restore after INC-7', ticket: 'INC-7' } });
  const cases: Array<[Record<string, unknown>, RegExp]> = [
    [{ reason: '   ' }, /--reason needs a text/],
    [{ reason: 'two\nlines' }, /--reason must be one line of at most 500/],
    [{ reason: 'x'.repeat(501) }, /--reason must be one line/],
    [{ reason: 'ok', ticket: 'has space' }, /--ticket 'has space' must be an identifier/],
    [{ reason: 'ok', ticket: 'T'.repeat(101) }, /--ticket .* must be an identifier/],
    [{ ticket: 'CHG-1' }, /--ticket goes with --reason/],
  ];
  for (const [flags, message] of cases) {
    const result = parseStartFlags({ ...base, ...flags });
    t.match(result, { ok: false, failure: { kind: 'usage', exitCode: 2, reason: message } }, JSON.stringify(flags).slice(0, 60));
  }
});
