// What `pam tunnel start` prints: a banner for people, stable lines without a TTY, JSON lines with
// --json. In --run mode everything goes to stderr so the wrapped command owns stdout.

import { hostPort } from '../machines/address.js';
import type { Outcome } from '../machines/errors.js';
import type { TunnelPorts } from '../machines/tunnel.actors.js';
import type { TunnelContext } from '../machines/tunnel.machine.js';
import type { PamContext } from './context.js';

export interface TunnelPrinter {
  readonly announce: TunnelPorts['announce'];
  stopped(id: string, outcome: Outcome): void;
}

export function createTunnelPrinter(
  context: PamContext,
  options: { json: boolean; runMode: boolean; pid: number; target: string },
): TunnelPrinter {
  const out = options.runMode ? context.stderr : context.stdout;
  // Only onto a terminal: `2> log` or a pipe must not collect carriage returns and frames.
  const stderrIsTerminal = (context.stderr as { isTTY?: boolean }).isTTY === true;
  const spinner =
    context.interactive && stderrIsTerminal && !options.json
      ? startSpinner(context.stderr, `connecting to ${options.target}`)
      : () => undefined;
  const line = (text: string) => {
    spinner();
    out.write(`${text}\n`);
  };
  const json = (value: object) => line(JSON.stringify(value));

  return {
    announce: {
      ready(tunnel: TunnelContext) {
        const host = tunnel.listener?.host ?? '';
        const port = tunnel.listener?.port ?? 0;
        const target = tunnel.settings?.target ?? '';
        const socks = tunnel.settings?.socks === true;
        const shown = socks ? 'SOCKS5 proxy (the gateway decides each destination)' : target;
        const address = hostPort(host, port);
        const path = tunnel.link?.path?.();
        const via = path ? `, ${path.kind}` : '';
        if (options.json) {
          json({
            event: 'ready',
            id: tunnel.id,
            pid: options.pid,
            host,
            port,
            target,
            mode: tunnel.settings?.mode,
            socks,
            ...(path ? { path: path.kind, pair: path.pair } : {}),
          });
        } else if (tunnel.settings?.mode === 'shell') {
          line(
            `pam: listening on ${address} → ${shown} (tunnel ${tunnel.id}${via}); it lasts as long as this shell: \`tunnel stop ${tunnel.id}\` ends it`,
          );
        } else if (context.interactive && !options.runMode) {
          line(`pam: listening on ${address} → ${shown} (tunnel ${tunnel.id}${via}); Ctrl+C to stop; use -bg to detach`);
        } else {
          line(`pam: listening on ${address} → ${shown} (tunnel ${tunnel.id}, pid ${options.pid}${via})`);
        }
      },
      skipped(tunnel: TunnelContext) {
        spinner();
        context.stderr.write(
          `pam: ${tunnel.settings?.skipped} skipped: tunnels persist for this shell session ` +
            '(use one-shot `pam tunnel start -bg` for a tunnel that outlives the shell)\n',
        );
      },
      problem(message: string) {
        spinner();
        context.stderr.write(`pam: warning: ${message}\n`);
      },
    },
    stopped(id: string, outcome: Outcome) {
      spinner();
      if (options.json) {
        json({ event: 'stopped', id, exitCode: outcome.exitCode, kind: outcome.kind, reason: outcome.reason });
        return;
      }
      // The wrapped command's code speaks for itself; everything else gets one line on stderr.
      if (outcome.kind === 'command' && outcome.exitCode !== 0) return;
      context.stderr.write(
        outcome.exitCode === 0 || outcome.kind === 'command' ? `pam: tunnel ${id} ${outcome.reason}\n` : `pam: ${outcome.reason}\n`,
      );
    },
  };
}

/** A one-line spinner on a terminal while connecting; the returned function clears it (idempotent). */
function startSpinner(stream: PamContext['stderr'], label: string): () => void {
  const frames = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
  let frame = 0;
  const draw = () => stream.write(`\r${frames[frame++ % frames.length]} ${label}…`);
  draw();
  const timer = setInterval(draw, 100);
  timer.unref();
  let active = true;
  return () => {
    if (!active) return;
    active = false;
    clearInterval(timer);
    stream.write('\r\x1b[K');
  };
}
