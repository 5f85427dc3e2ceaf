// The real diagnose checks (adapters/diagnose-checks.ts) and their fake pass one contract: an
// in-process gateway on loopback, and coturn (Debian `coturn`) on 127.0.0.1 for STUN and TURN.

import { spawnSync } from 'node:child_process';
import t from 'tap';
import { createDiagnoseChecks } from '../../adapters/diagnose-checks.js';
import { keyFingerprint } from '../../adapters/key-fingerprint.js';
import { mintTurnCredential } from '../../broker/server.js';
import { startGateway } from '../../gateway/server.js';
import { diagnoseContract } from '../support/contracts/diagnose.contract.js';
import { createFakeDiagnosePorts } from '../support/fake-diagnose.js';
import { freePort, scratchDir, spawnProc } from '../support/processes.js';
import { testGatewayKey } from '../support/sealed.js';

const secret = 'diagnose-spec-turn-secret';

diagnoseContract(t, 'fake checks', async () => {
  const stun = { host: '127.0.0.1', port: 3478, transport: 'udp' as const };
  const gatewayUrl = 'http://127.0.0.1:8765';
  const fingerprint = `SHA256:${'B'.repeat(43)}`;
  return {
    ports: createFakeDiagnosePorts({
      sites: { [gatewayUrl]: { broker: false, fingerprint, stun: [stun], turn: [] } },
      stun: ['127.0.0.1:3478'],
      turnCredential: 'right',
    }),
    gatewayUrl,
    fingerprint,
    deadUrl: 'http://127.0.0.1:9',
    stun,
    turn: { ...stun, username: 'u', credential: 'right' },
    badTurn: { ...stun, username: 'u', credential: 'wrong' },
  };
});

const coturn = spawnSync('turnserver', ['--version'], { encoding: 'utf8' }).status !== null;
if (!coturn && process.env.CI === 'true') t.fail('coturn (turnserver) is needed: apt-get install -y coturn');
if (!coturn) t.comment('skipping the real diagnose checks: no turnserver (Debian coturn) here');
else
  diagnoseContract(t, 'real checks', async (t) => {
    const key = await testGatewayKey();
    const gateway = await startGateway({
      host: '127.0.0.1',
      port: 0,
      token: 'diagnose-spec-token',
      key,
      targets: {},
      log: () => undefined,
      ice: { hosts: ['127.0.0.1'] },
    });
    t.teardown(() => gateway.close());
    const port = await freePort();
    const dir = scratchDir(t);
    const server = spawnProc(t, 'turnserver', [
      '-n',
      '--listening-ip=127.0.0.1',
      '--relay-ip=127.0.0.1',
      `--listening-port=${port}`,
      '--use-auth-secret',
      `--static-auth-secret=${secret}`,
      '--realm=pam-spec',
      '--no-tls',
      '--no-dtls',
      '--no-cli',
      '--log-file=stdout',
      '--simple-log',
      `--pidfile=${dir}/turnserver.pid`,
    ]);
    await server.line(/Total (UDP|General) servers/, 15_000);
    const stun = { host: '127.0.0.1', port, transport: 'udp' as const };
    const minted = mintTurnCredential(secret, 'spec', Math.floor(Date.now() / 1000) + 600);
    return {
      ports: createDiagnoseChecks({
        iceServers: [],
        keys: { verify: () => undefined, trust: () => undefined },
        timeoutMs: 3_000,
        transport: () => {
          throw new Error('no tunnel in this contract');
        },
      }),
      gatewayUrl: gateway.url,
      fingerprint: keyFingerprint(key.publicKey),
      deadUrl: `http://127.0.0.1:${await freePort()}`,
      stun,
      turn: { ...stun, username: minted.username, credential: minted.credential },
      badTurn: { ...stun, username: minted.username, credential: 'wrong' },
    };
  });
