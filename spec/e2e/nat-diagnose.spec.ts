// `pam tunnel diagnose` in the NAT lab (spec/support/nat-lab.ts), one lab for the file: from the client
// behind a cone NAT it reports the public address and `cone` and a tunnel through the broker; with the
// client's router switched to symmetric, `symmetric`; with the broker stopped, it fails at step 1
// naming the URL, with the gateway-unreachable code.

import t from 'tap';
import { labAvailable } from '../support/netns.js';
import { exchangePeer, natLab } from '../support/nat-lab.js';
import { pamBin } from '../support/processes.js';

interface Step {
  step: string;
  status: string;
  detail: string;
  fix?: string;
  facts?: Record<string, unknown>;
}

const targetBytes = 1000;

if (labAvailable(t)) {
  t.test('diagnose behind cone, then symmetric NAT, then with the broker down', async (t) => {
    const nat = natLab(t, { clientNat: 'cone', gatewayNat: 'cone' });
    if (!nat) return;
    await nat.startCoturn();
    const broker = await nat.startBroker();
    const target = nat.lab.spawn(t, nat.ns.gateway, process.execPath, [exchangePeer, 'serve', nat.gatewayHost, String(targetBytes)]);
    const targetPort = Number((await target.event('listening')).port);
    const gateway = await nat.startGateway(broker.url, targetPort);
    const env = nat.clientEnv(gateway.url, gateway.key);
    const twoStun = ['--ice-server', `stun:${nat.publicHost}:3478`, '--ice-server', 'stun:203.0.113.17:3478'];
    const diagnose = async (args: readonly string[]) => {
      const proc = nat.lab.spawn(t, nat.ns.client, process.execPath, [pamBin, 'tunnel', 'diagnose', ...args, '--json', ...twoStun], {
        env,
      });
      const code = await proc.exited;
      const lines = proc.stdout
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as Step & { event?: string; exitCode?: number });
      const steps = new Map(lines.filter((line) => line.step).map((line) => [line.step, line]));
      return { code, lines, steps, stderr: proc.stderr };
    };

    const cone = await diagnose(['sink']);
    t.equal(cone.code, 0, `every step passed behind cone NAT (${cone.stderr})`);
    t.same(
      cone.lines.map((line) => line.step ?? line.event),
      ['gateway', 'site', 'stun', 'nat', 'turn', 'tunnel', 'diagnosed'],
      'the steps, in order, then the end',
    );
    t.match(
      cone.steps.get('site'),
      { status: 'ok', facts: { broker: true, key: gateway.key } },
      'the site is registered, with the pinned key',
    );
    t.match(cone.steps.get('stun'), { status: 'ok', facts: { address: '203.0.113.2' } }, "the public address is router A's");
    t.match(cone.steps.get('nat'), { status: 'ok', facts: { nat: 'cone' } }, 'cone');
    t.match(
      cone.steps.get('turn'),
      { status: 'ok', facts: { relayed: /^203\.0\.113\.1:\d+$/ } },
      'a TURN allocation with minted credentials',
    );
    t.match(
      cone.steps.get('tunnel'),
      { status: 'ok', facts: { path: 'direct', bytes: targetBytes } },
      'a test tunnel carried the target bytes',
    );

    nat.setClientNat('symmetric');
    const symmetric = await diagnose([]);
    t.equal(symmetric.code, 0, 'without TARGET the tunnel step is skipped, not failed');
    t.match(symmetric.steps.get('nat'), { status: 'ok', facts: { nat: 'symmetric' } }, 'symmetric');
    t.match(symmetric.steps.get('tunnel'), { status: 'skipped', fix: /pam tunnel diagnose TARGET/ });

    broker.proc.child.kill('SIGTERM');
    await broker.proc.exited;
    const down = await diagnose(['sink']);
    t.equal(down.code, 69, 'the broker down: the gateway-unreachable code');
    t.same(
      down.lines.map((line) => line.step ?? line.event),
      ['gateway', 'diagnosed'],
      'it stops at step 1',
    );
    t.match(down.steps.get('gateway'), {
      status: 'failed',
      detail: new RegExp(`${broker.url.replace(/[.]/g, '\\.')} is unreachable \\(ECONNREFUSED\\)`),
      fix: /check --gateway \/ PAM_GATEWAY_URL/,
    });
  });
}
