/**
 * The migration agent on the demo's host B, as a user runs it on a real second host: the
 * `node-criu agent` command, in B's network namespace and in a private mount namespace whose work
 * directory is a tmpfs only it can see (so images can reach B only over its TLS channel).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { DemoError } from './errors';
import type { DemoPki } from './pki';

export const AGENT_PORT = 7400;

export interface DemoAgent {
  port: number;
  pid: number;
  /** The agent's application socket (connections route), when asked for. */
  appSocket?: string;
  stop(): Promise<void>;
}

/** dist/cli/main.js next to this file (or under dist/ when run from the TypeScript sources). */
function cliPath(): string {
  return __filename.endsWith('.ts')
    ? path.resolve(__dirname, '..', '..', 'dist', 'cli', 'main.js')
    : path.resolve(__dirname, '..', 'cli', 'main.js');
}

export async function startDemoAgent(options: {
  netnsPath: string;
  address: string;
  pki: DemoPki;
  stateDir: string;
  allowAddress: string;
  device: string;
  appSocket?: string;
  criuPath?: string;
  log: (line: string) => void;
}): Promise<DemoAgent> {
  const workDir = path.join(options.stateDir, 'agent-work');
  fs.mkdirSync(workDir, { recursive: true, mode: 0o700 });
  const logFile = fs.openSync(path.join(options.stateDir, 'agent.log'), 'a');
  let child: ChildProcess;
  // The one shell line mounts the private work directory and execs the agent; values reach it
  // only as positional parameters ($0, "$@").
  try {
    child = spawn(
      'nsenter',
      [
        `--net=${options.netnsPath}`,
        '--',
        'unshare',
        '--mount',
        '--propagation',
        'private',
        '--',
        'sh',
        '-c',
        'mount -t tmpfs -o mode=0700 tmpfs "$0" && exec "$@"',
        workDir,
        process.execPath,
        cliPath(),
        'agent',
        '--listen',
        `${options.address}:${AGENT_PORT}`,
        '--cert',
        options.pki.files.agentCert,
        '--key',
        options.pki.files.agentKey,
        '--ca',
        options.pki.files.ca,
        '--work-dir',
        workDir,
        '--allow-address',
        options.allowAddress,
        '--allow-device',
        options.device,
        ...(options.appSocket !== undefined ? ['--app-socket', options.appSocket] : []),
        '--json',
      ],
      { stdio: ['ignore', 'pipe', logFile] },
    );
  } finally {
    fs.closeSync(logFile);
  }
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    let seen = '';
    const timer = setTimeout(
      () => reject(new DemoError('the agent did not start listening within 30 s', 'ERR_DEMO_START_FAILED')),
      30000,
    );
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (chunk: string) => {
      seen += chunk;
      for (;;) {
        const newline = seen.indexOf('\n');
        if (newline < 0) break;
        const line = seen.slice(0, newline);
        seen = seen.slice(newline + 1);
        fs.appendFileSync(path.join(options.stateDir, 'agent-events.log'), `${line}\n`);
        if (line.includes('"event":"listening"')) {
          options.log(`  agent listening: ${line}`);
          clearTimeout(timer);
          resolve();
        }
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(
        new DemoError(`the agent exited (${String(code)}) before listening; see agent.log`, 'ERR_DEMO_START_FAILED'),
      );
    });
  });
  return {
    port: AGENT_PORT,
    pid: child.pid as number,
    ...(options.appSocket !== undefined ? { appSocket: options.appSocket } : {}),
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 10000).unref())]);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
  };
}
