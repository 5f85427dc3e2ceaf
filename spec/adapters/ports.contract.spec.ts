// Real adapters and their fakes run through the same contract suites: a fake that passes what the
// real one fails would make the machine's unit tests lie.

import { spawn } from 'node:child_process';
import { Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { StopSignal } from '../../machines/errors.js';
import t from 'tap';
import { createShellRunner } from '../../adapters/shell-runner.js';
import { createTcpListenerFactory } from '../../adapters/tcp-listener.js';
import { createFakeListeners, createFakeRunner, type FakeListener, FakeSignals } from '../support/fakes.js';
import { listenerContract } from '../support/contracts/listener.contract.js';
import { runnerContract } from '../support/contracts/runner.contract.js';
import { signalsContract, type SignalsHarness } from '../support/contracts/signals.contract.js';

runnerContract(t, 'shell runner', () => createShellRunner({ stdio: 'ignore' }));
runnerContract(t, 'fake runner', () => createFakeRunner());

signalsContract(t, 'process signals', () => childSignals(join(dirname(fileURLToPath(import.meta.url)), '../support/signals-child.js')));
signalsContract(t, 'fake signals', async () => {
  const signals = new FakeSignals();
  const seen: StopSignal[][] = [];
  const stops: Array<() => void> = [];
  return {
    async watch() {
      const index = seen.push([]) - 1;
      stops[index] = signals.watch((signal) => seen[index]!.push(signal));
      return index;
    },
    async unwatch(index) {
      stops[index]?.();
    },
    async raise(signal) {
      signals.emit(signal);
    },
    async seen(index) {
      return seen[index] ?? [];
    },
    async close() {},
  };
});

/** The real adapter in a child process, driven over stdin/stdout; signals sent with kill(2). */
async function childSignals(script: string): Promise<SignalsHarness> {
  const child = spawn(process.execPath, [script], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines: Array<Record<string, unknown>> = [];
  const waiters: Array<() => void> = [];
  createInterface({ input: child.stdout! }).on('line', (line) => {
    lines.push(JSON.parse(line) as Record<string, unknown>);
    for (const wake of waiters.splice(0)) wake();
  });
  const next = async (key: string): Promise<Record<string, unknown>> => {
    for (;;) {
      const index = lines.findIndex((line) => key in line);
      if (index >= 0) return lines.splice(index, 1)[0]!;
      if (child.exitCode !== null || child.signalCode !== null)
        throw new Error(`signals child ended (${child.exitCode ?? child.signalCode}) waiting for ${key}`);
      await new Promise<void>((resolve) => {
        waiters.push(resolve);
        setTimeout(resolve, 50);
      });
    }
  };
  const ask = async (command: string, key: string) => {
    child.stdin!.write(`${command}\n`);
    return next(key);
  };
  await next('ready');
  return {
    watch: async () => Number((await ask('watch', 'watching')).watching),
    unwatch: async (index) => void (await ask(`unwatch ${index}`, 'unwatched')),
    async raise(signal) {
      child.kill(signal);
      await next('signal');
    },
    seen: async (index) => (await ask(`seen ${index}`, 'seen')).seen as StopSignal[],
    async close() {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGKILL');
        await exited;
      }
    },
  };
}

listenerContract(t, 'tcp listener', createTcpListenerFactory, async (listener) => {
  await new Promise<void>((resolve, reject) => {
    const socket = new Socket();
    socket.once('error', reject);
    socket.connect(listener.port, listener.host, () => {
      t.teardown(() => socket.destroy());
      resolve();
    });
  });
});
listenerContract(
  t,
  'fake listener',
  () => createFakeListeners(),
  async (listener) => {
    (listener as unknown as FakeListener).connect('client');
  },
);
