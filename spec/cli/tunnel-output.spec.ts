// What `pam tunnel start` writes: no spinner where stderr is not a terminal, the spinner cleared
// before every other line, IPv6 addresses in brackets, and a ready line that fits the mode.

import t from 'tap';
import { createTunnelPrinter } from '../../cli/tunnel-output.js';
import type { PamContext } from '../../cli/context.js';
import type { TunnelContext } from '../../machines/tunnel.machine.js';

function stream(isTTY: boolean): { isTTY: boolean; text: string; write(chunk: string): boolean } {
  return {
    isTTY,
    text: '',
    write(chunk: string) {
      this.text += chunk;
      return true;
    },
  };
}

function context(stderrIsTTY: boolean) {
  const stdout = stream(true);
  const stderr = stream(stderrIsTTY);
  const value = { stdin: process.stdin, stdout, stderr, env: {}, interactive: true, colorDepth: 1 } as unknown as PamContext;
  return { value, stdout, stderr };
}

const tunnel = (host: string, mode: string) =>
  ({
    id: '0badc0de',
    listener: { host, port: 15432 },
    listeners: [{ host, port: 15432 }],
    settings: { target: 'db', targets: [{ name: 'db', port: 15432 }], mode, skipped: '--background' },
  }) as unknown as TunnelContext;

t.test('stderr not a terminal (2> file): no spinner frame, no carriage return', async (t) => {
  const { value, stdout, stderr } = context(false);
  const printer = createTunnelPrinter(value, { json: false, runMode: false, pid: 1, target: 'db' });
  printer.announce.ready(tunnel('127.0.0.1', 'foreground'));
  t.equal(stderr.text, '', 'nothing on stderr');
  t.notMatch(stdout.text, /\r/);
});

t.test('on a terminal the spinner is cleared before each line, the skip notice included', async (t) => {
  const { value, stderr } = context(true);
  const printer = createTunnelPrinter(value, { json: false, runMode: false, pid: 1, target: 'db' });
  t.match(stderr.text, /connecting to db/, 'the spinner is drawn');
  printer.announce.skipped(tunnel('127.0.0.1', 'shell'));
  const notice = stderr.text.indexOf('skipped');
  t.ok(stderr.text.lastIndexOf('\r\x1b[K', notice) > stderr.text.lastIndexOf('connecting to db', notice), 'cleared before the notice');
});

t.test('IPv6 in brackets; the shell ready line does not offer -bg', async (t) => {
  const { value, stdout } = context(true);
  const printer = createTunnelPrinter(value, { json: false, runMode: false, pid: 1, target: 'db' });
  printer.announce.ready(tunnel('::1', 'shell'));
  t.match(stdout.text, /listening on \[::1\]:15432 → db/);
  t.notMatch(stdout.text, /-bg/);
  const one = context(true);
  createTunnelPrinter(one.value, { json: false, runMode: false, pid: 1, target: 'db' }).announce.ready(tunnel('::1', 'foreground'));
  t.match(one.stdout.text, /listening on \[::1\]:15432 → db .*Ctrl\+C to stop/);
});
