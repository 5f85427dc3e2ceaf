// The one signal policy: however many parts of a process watch, each signal has one process
// listener, and each watcher hears each signal once (pam shell's two listeners sent two stops).

import { EventEmitter } from 'node:events';
import t from 'tap';
import { createProcessSignals, createRelayedSignals } from '../../adapters/posix-signals.js';

t.test('many watchers, one process listener per signal; each watcher hears a signal once', async (t) => {
  const fakeProcess = new EventEmitter() as NodeJS.Process;
  const heard: string[] = [];
  const stopTunnel = createProcessSignals(fakeProcess).watch((signal) => heard.push(`tunnel ${signal}`));
  const stopShell = createProcessSignals(fakeProcess, ['SIGTERM', 'SIGHUP']).watch((signal) => heard.push(`shell ${signal}`));
  t.same(
    ['SIGINT', 'SIGTERM', 'SIGHUP'].map((signal) => fakeProcess.listenerCount(signal)),
    [1, 1, 1],
    'one listener each',
  );
  fakeProcess.emit('SIGTERM');
  fakeProcess.emit('SIGINT');
  t.same(heard, ['tunnel SIGTERM', 'shell SIGTERM', 'tunnel SIGINT'], 'each watcher once, and only for what it watches');
  stopTunnel();
  t.equal(fakeProcess.listenerCount('SIGINT'), 0, "no listener once nobody watches: Node's default is back");
  t.equal(fakeProcess.listenerCount('SIGTERM'), 1);
  stopShell();
  t.same(
    ['SIGINT', 'SIGTERM', 'SIGHUP'].map((signal) => fakeProcess.listenerCount(signal)),
    [0, 0, 0],
  );
});

t.test('relayed signals reach each current watcher once and say how many there were', async (t) => {
  const relay = createRelayedSignals();
  const heard: string[] = [];
  const stop = relay.watch((signal) => heard.push(signal));
  t.equal(relay.emit('SIGINT'), 1);
  stop();
  t.equal(relay.emit('SIGINT'), 0);
  t.same(heard, ['SIGINT']);
});
