// `pam tunnel diagnose [TARGET]`: why a tunnel does not come up, step by step (machines/diagnose.ts
// with the real checks of adapters/diagnose-checks.ts).

import { Command, Option } from 'clipanion';
import { runDiagnosis, type DiagnoseStep } from '../../machines/diagnose.js';
import { exitCodeSummary, TunnelError } from '../../machines/errors.js';
import { gatewayUrlProblem } from '../../machines/start-flags.js';
import {
  gatewayKeyCheck,
  gatewaySource,
  gatewayUrl,
  iceServers,
  readConfigFile,
  readCredentials,
  transportChoice,
  transportForTurn,
} from '../config.js';
import { iceServerOption, numberFlag, transportOption } from '../options.js';
import { PamCommand } from '../pam-command.js';
import { SingleString } from '../single-option.js';

export const diagnoseExitCodes = exitCodeSummary([
  'usage',
  'unknownTarget',
  'gatewayUnreachable',
  'authRefused',
  'gatewayKeyMismatch',
  'connectTimeout',
]);

export class TunnelDiagnoseCommand extends PamCommand {
  static override paths = [['tunnel', 'diagnose']];

  static override usage = Command.Usage({
    category: 'Tunnels',
    description: 'check, step by step, why a tunnel to the gateway would not come up',
    details: `
      Checks in order: the broker or gateway URL (reachable? TLS accepted?), the site's presence at the
      broker (or the gateway's key) against the pinned or recorded key, a STUN Binding (the public
      address this host is seen with), with two STUN servers whether the NAT keeps the same public port
      towards both (cone) or not (symmetric), a TURN allocation (with the credentials the broker mints,
      or PAM_ICE_USERNAME/PAM_ICE_CREDENTIAL), and with TARGET a real tunnel that reads what the target
      sends first (the gateway token is checked here). STUN and TURN servers are the --ice-server ones
      plus what the broker hands out. Each step prints ok, failed or skipped with the fix. STUN, NAT and
      TURN failures do not stop the run; the first failure of the URL, the site or the tunnel does,
      with its code. --json prints one JSON object a line per step ({"step","status","detail","fix",
      "kind","facts"}), then {"event":"diagnosed","exitCode"}. Exit codes: ${diagnoseExitCodes}.
    `,
    examples: [
      ['Check a broker site and a tunnel to target db', 'PAM_GATEWAY_URL=https://broker.example:8443/sites/lab $0 tunnel diagnose db'],
      [
        'Tell cone from symmetric NAT with two STUN servers, as JSON',
        '$0 tunnel diagnose --ice-server stun:203.0.113.1:3478 --ice-server stun:203.0.113.17:3478 --json',
      ],
    ],
  });

  target = Option.String({ name: 'target', required: false });
  gateway = SingleString('--gateway', { description: 'gateway or broker site URL (default: $PAM_GATEWAY_URL)' });
  tokenFile = SingleString('--token-file', { description: 'file holding the gateway token (default: $PAM_GATEWAY_TOKEN)' });
  keyFile = SingleString('--key-file', {
    description:
      'your private key from `pam keygen` for the test tunnel (default: $PAM_KEY_FILE, or $XDG_CONFIG_HOME/pam/id_ed25519 if it exists)',
  });
  iceServers = iceServerOption();
  transport = transportOption();
  timeout = SingleString('--timeout', '5', { description: 'seconds each network step may take (default 5; the test tunnel at least 20)' });
  json = Option.Boolean('--json', false, { description: 'print one JSON object a line per step' });

  async execute(): Promise<number> {
    const env = this.context.env;
    const timeoutMs = numberFlag('--timeout', this.timeout, { min: 1, max: 300, whole: false, unit: 'seconds' }) * 1000;
    const file = readConfigFile(env);
    const url = gatewayUrl(this.gateway, env, file)?.trim();
    if (!url) throw new TunnelError('usage', 'no gateway: pass --gateway URL or set PAM_GATEWAY_URL (a broker site is …/sites/NAME)');
    const problem = gatewayUrlProblem(url, gatewaySource(this.gateway, env, file));
    if (problem) throw new TunnelError('usage', problem);
    const warn = (line: string) => this.context.stderr.write(`pam: ${line}\n`);
    const servers = iceServers(this.iceServers, env);
    const transport = transportForTurn(transportChoice(this.transport, env), servers, warn);
    const keys = gatewayKeyCheck(env, file);
    const [{ createDiagnoseChecks }, { lazyTransport }] = await Promise.all([
      import('../../adapters/diagnose-checks.js'),
      import('../tunnel-runtime.js'),
    ]);
    const checks = createDiagnoseChecks({
      iceServers: servers,
      keys,
      timeoutMs,
      transport: () =>
        lazyTransport({
          credentials: () => readCredentials({ tokenFile: this.tokenFile, keyFile: this.keyFile, env, file }),
          env,
          iceServers: this.iceServers,
          transport,
          warn,
          keys,
        }),
    });
    try {
      const result = await runDiagnosis({ url, ...(this.target !== undefined ? { target: this.target } : {}) }, checks, (step) =>
        this.context.stdout.write(this.json ? `${JSON.stringify(step)}\n` : prose(step)),
      );
      if (this.json) this.context.stdout.write(`${JSON.stringify({ event: 'diagnosed', exitCode: result.exitCode })}\n`);
      return result.exitCode;
    } finally {
      checks.close();
    }
  }
}

const labels: Record<DiagnoseStep['step'], string> = {
  gateway: 'gateway URL',
  site: 'site',
  stun: 'STUN',
  nat: 'NAT type',
  turn: 'TURN',
  tunnel: 'test tunnel',
};

function prose(step: DiagnoseStep): string {
  const fix = step.status !== 'ok' && step.fix ? `\n      fix: ${step.fix}` : '';
  return `${step.status.padEnd(7)} ${labels[step.step]}: ${step.detail}${fix}\n`;
}
