/**
 * `node-criu agent --app-socket` in a network namespace, for the tests of the connections route
 * through the agent: it restores a source's connections (mutual TLS on `listen`) and passes them
 * to the application registered on `dir`/app.sock. Its --json events are collected.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import type { TestPki } from '../helpers/pki';
import { waitUntil } from '../helpers/wait';

const CLI = path.join(__dirname, '..', '..', 'dist', 'cli', 'main.js');

export interface AppSocketAgent {
  child: ChildProcess;
  events: Array<Record<string, unknown>>;
  /** Where an application registers (acceptHandoverViaAgent's `agent`). */
  appSocket: string;
  stop(): Promise<void>;
}

/** Starts the agent in `netnsPath` listening on `listen` (host:port); resolves once it listens. */
export async function startAppSocketAgent(
  netnsPath: string,
  listen: string,
  pki: TestPki,
  dir: string,
): Promise<AppSocketAgent> {
  fs.mkdirSync(path.join(dir, 'work'), { mode: 0o700 });
  const appSocket = path.join(dir, 'app.sock');
  const child = spawn(
    'nsenter',
    [
      `--net=${netnsPath}`,
      '--',
      process.execPath,
      CLI,
      'agent',
      '--listen',
      listen,
      '--cert',
      pki.file('server'),
      '--key',
      pki.file('server-key'),
      '--ca',
      pki.file('ca'),
      '--work-dir',
      path.join(dir, 'work'),
      '--app-socket',
      appSocket,
      '--json',
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const events: Array<Record<string, unknown>> = [];
  let buffered = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    buffered += chunk.toString();
    for (let i = buffered.indexOf('\n'); i >= 0; i = buffered.indexOf('\n')) {
      events.push(JSON.parse(buffered.slice(0, i)) as Record<string, unknown>);
      buffered = buffered.slice(i + 1);
    }
  });
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
  };
  try {
    await waitUntil(() => events.some((e) => e.event === 'listening'), {
      what: 'the agent listening',
      timeoutMs: 30000,
    });
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  }
  return { child, events, appSocket, stop };
}
