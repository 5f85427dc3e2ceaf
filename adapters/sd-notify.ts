// Readiness for systemd Type=notify units. Node has no unix datagram sockets, so READY=1 is sent by
// systemd's own `systemd-notify` (present wherever systemd is), with MAINPID set to this process; the
// unit needs NotifyAccess=all because the message comes from that helper, not from the main pid.

import { spawn } from 'node:child_process';

export interface Notifier {
  /** Tell the supervisor the tunnel is usable. Resolves once delivered (or given up, with a warning). */
  ready(status: string): Promise<void>;
}

export function createSystemdNotifier(env: NodeJS.ProcessEnv, warn: (message: string) => void, pid: number = process.pid): Notifier {
  const socket = env.NOTIFY_SOCKET;
  return {
    async ready(status) {
      if (!socket) return;
      const code = await new Promise<number | string>((resolve) => {
        const child = spawn('systemd-notify', ['--ready', `--pid=${pid}`, `STATUS=${status}`], { stdio: 'ignore', env });
        child.once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
        child.once('exit', (exitCode) => resolve(exitCode ?? 'signal'));
      });
      if (code !== 0) warn(`NOTIFY_SOCKET is set but systemd-notify failed (${code}): the unit will not see READY=1`);
    },
  };
}
