// The diagnosis with fake checks: steps in order, each ok/failed/skipped with a fix, the first
// blocking failure ends the run with its kind's code and nothing after it runs.

import t from 'tap';
import { type DiagnoseStep, runDiagnosis, type SignallingProbe } from '../../machines/diagnose.js';
import { createFakeDiagnosePorts, type FakeNetwork } from '../support/fake-diagnose.js';

const url = 'https://broker.example:8443/sites/lab';
const turn = { host: '203.0.113.1', port: 3478, transport: 'udp' as const, username: '1:pam', credential: 'right' };
const probe: SignallingProbe = {
  broker: true,
  fingerprint: `SHA256:${'A'.repeat(43)}`,
  stun: [
    { host: '203.0.113.1', port: 3478, transport: 'udp' },
    { host: '203.0.113.17', port: 3478, transport: 'udp' },
  ],
  turn: [turn],
};
const world: FakeNetwork = {
  sites: { [url]: probe },
  stun: ['203.0.113.1:3478', '203.0.113.17:3478'],
  turnCredential: 'right',
  tunnel: { path: 'direct', pair: 'srflx 203.0.113.2:40000/udp → srflx 203.0.113.18:50000/udp', bytes: 42 },
};

async function diagnose(network: FakeNetwork, target: string | null = 'db') {
  const ports = createFakeDiagnosePorts(network);
  const reported: DiagnoseStep[] = [];
  const result = await runDiagnosis({ url, ...(target !== null ? { target } : {}) }, ports, (step) => reported.push(step));
  return { ...result, reported, calls: ports.calls, byName: new Map(result.steps.map((step) => [step.step, step])) };
}

t.test('every step ok behind a cone NAT: exit 0, the steps in order, each reported as it ends', async (t) => {
  const run = await diagnose(world);
  t.equal(run.exitCode, 0);
  t.same(
    run.steps.map((step) => `${step.step} ${step.status}`),
    ['gateway ok', 'site ok', 'stun ok', 'nat ok', 'turn ok', 'tunnel ok'],
  );
  t.same(run.reported, run.steps, 'reported one by one');
  t.match(run.byName.get('stun'), { facts: { address: '203.0.113.2' }, detail: /public address 203\.0\.113\.2:\d+/ });
  t.match(run.byName.get('nat'), { facts: { nat: 'cone' } });
  t.match(run.byName.get('tunnel'), { facts: { path: 'direct', bytes: 42 } });
});

t.test('a symmetric NAT: another public port towards the second STUN server', async (t) => {
  const run = await diagnose({ ...world, symmetric: true });
  t.match(run.byName.get('nat'), { status: 'ok', facts: { nat: 'symmetric' }, detail: /^symmetric: .*expect the TURN relay/ });
});

t.test('the URL unreachable: step 1 fails with 69 naming the URL, nothing else runs', async (t) => {
  const run = await diagnose({ ...world, sites: {} });
  t.equal(run.exitCode, 69);
  t.same(run.calls, ['reach']);
  t.match(run.steps, [
    { step: 'gateway', status: 'failed', detail: /unreachable/, fix: new RegExp(`PAM_GATEWAY_URL \\(${url.replace(/[.]/g, '\\.')}\\)`) },
  ]);
});

t.test('a key that is not the pinned one: 77 at the site step, with the fix', async (t) => {
  const run = await diagnose({
    ...world,
    sites: {},
    siteFailures: { [url]: { kind: 'gatewayKeyMismatch', message: 'the gateway presents key …, but PAM_GATEWAY_KEY pins …' } },
  });
  t.equal(run.exitCode, 77);
  t.same(run.calls, ['reach', 'site']);
  t.match(run.steps[1], {
    step: 'site',
    status: 'failed',
    kind: 'gatewayKeyMismatch',
    fix: /PAM_GATEWAY_KEY or the line in known_gateways/,
  });
});

t.test('STUN and TURN failures do not block; no STUN server means STUN and NAT skipped with the fix', async (t) => {
  const failing = await diagnose({ ...world, stun: [], tunnel: { path: 'relay', pair: 'relay … → …', bytes: 0 } });
  t.equal(failing.exitCode, 0, 'the tunnel came up anyway');
  t.same(
    failing.steps.map((step) => `${step.step} ${step.status}`),
    ['gateway ok', 'site ok', 'stun failed', 'nat skipped', 'turn failed', 'tunnel ok'],
  );
  t.match(failing.byName.get('stun'), { fix: /allow outbound UDP|TURN over TCP/ });
  const none = await diagnose({ ...world, sites: { [url]: { ...probe, stun: [], turn: [] } } });
  t.match(none.byName.get('stun'), { status: 'skipped', fix: /--ice-server stun:/ });
  t.match(none.byName.get('nat'), { status: 'skipped' });
  t.match(none.byName.get('turn'), { status: 'skipped', fix: /--turn-secret-file/ });
  const one = await diagnose({ ...world, sites: { [url]: { ...probe, stun: probe.stun.slice(0, 1) } } });
  t.match(one.byName.get('nat'), { status: 'skipped', detail: /needs two/ });
  const wrong = await diagnose({ ...world, turnCredential: 'other' });
  t.match(wrong.byName.get('turn'), { status: 'failed', detail: /401/ });
});

t.test('the test tunnel refused: the kind of the refusal is the exit code, the fix names the token', async (t) => {
  const run = await diagnose({ ...world, tunnel: { kind: 'authRefused', message: 'the gateway refused the token' } });
  t.equal(run.exitCode, 77);
  t.match(run.byName.get('tunnel'), { status: 'failed', kind: 'authRefused', fix: /PAM_GATEWAY_TOKEN/ });
  const unknown = await diagnose({ ...world, tunnel: { kind: 'unknownTarget', message: "target 'db' is not served" } });
  t.equal(unknown.exitCode, 68);
});

t.test('without a target the tunnel step is skipped and the run passes', async (t) => {
  const run = await diagnose(world, null);
  t.equal(run.exitCode, 0);
  t.match(run.byName.get('tunnel'), { status: 'skipped', fix: /pam tunnel diagnose TARGET/ });
  t.notOk(
    run.calls.some((call) => call.startsWith('tunnel')),
    'no tunnel was tried',
  );
});
