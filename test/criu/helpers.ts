/**
 * Test plumbing for the CRIU client suites: private network namespaces (CRIU, the dumped server
 * and its peer all run inside one, so CRIU's nftables lock lives and dies with it), a criu
 * wrapper that enters that namespace, fixture processes, and cleanup that never throws.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { locateCriu } from '../../lib/criu';

export const FIXTURES = path.join(__dirname, '..', 'fixtures');

export function uniqueName(prefix = 'ncr'): string {
  return `${prefix}-${process.pid}-${randomBytes(3).toString('hex')}`;
}

export function makeTempDir(label: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `node-criu-rpc-${label}-`));
}

export function removeDir(dir: string | undefined): void {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
}

export { newFds, openFds } from '../helpers/fds';

export function criuPath(): string {
  return locateCriu().path;
}

export class Netns {
  readonly name = uniqueName('ncr');
  readonly file = `/run/netns/${this.name}`;

  constructor() {
    execFileSync('ip', ['netns', 'add', this.name]);
    execFileSync('ip', ['-n', this.name, 'link', 'set', 'lo', 'up']);
  }

  /** A `criu` wrapper that runs criu inside this namespace (fds 3+ pass through nsenter). */
  criuWrapper(dir: string): string {
    const wrapper = path.join(dir, 'criu-in-netns');
    fs.writeFileSync(wrapper, `#!/bin/sh\nexec nsenter --net=${this.file} ${criuPath()} "$@"\n`, { mode: 0o755 });
    return wrapper;
  }

  /** Starts node `script` inside the namespace, in its own session, stdio on /dev/null. */
  spawnNode(script: string, args: string[]): ChildProcess {
    const child = spawn('nsenter', [`--net=${this.file}`, process.execPath, script, ...args], {
      detached: true,
      stdio: 'ignore',
      // libuv's io_uring rings are not something CRIU 4.2 can dump.
      env: { ...process.env, UV_USE_IO_URING: '0' },
    });
    child.on('error', () => undefined);
    return child;
  }

  /** nft tables inside the namespace (CRIU's lock table is 'CRIU-<pid>'). */
  nftTables(): string {
    return execFileSync('nsenter', [`--net=${this.file}`, 'nft', 'list', 'tables'], { encoding: 'utf8' });
  }

  private nft(args: string[]): string {
    return execFileSync('nsenter', [`--net=${this.file}`, 'nft', ...args], { encoding: 'utf8' });
  }

  /**
   * Counts RST segments to or from TCP `port` in this namespace (an nft output-hook counter, which
   * sees loopback traffic both ways). Namespace-wide counters would not do: every CRIU run sends
   * one RST on a probe connection of its own (measured: `criu check` adds 1 to OutRsts).
   */
  watchResets(port: number): () => number {
    const table = `ncr_rst_${port}`;
    this.nft(['add', 'table', 'inet', table]);
    this.nft(['add', 'chain', 'inet', table, 'out', '{ type filter hook output priority 0 ; }']);
    this.nft([
      'add',
      'rule',
      'inet',
      table,
      'out',
      'tcp',
      'sport',
      String(port),
      'tcp',
      'flags',
      '&',
      'rst',
      '==',
      'rst',
      'counter',
    ]);
    this.nft([
      'add',
      'rule',
      'inet',
      table,
      'out',
      'tcp',
      'dport',
      String(port),
      'tcp',
      'flags',
      '&',
      'rst',
      '==',
      'rst',
      'counter',
    ]);
    return () =>
      [...this.nft(['list', 'chain', 'inet', table, 'out']).matchAll(/counter packets (\d+)/g)].reduce(
        (sum, m) => sum + Number(m[1]),
        0,
      );
  }

  remove(): void {
    try {
      execFileSync('ip', ['netns', 'del', this.name], { stdio: 'ignore' });
    } catch {
      // already gone
    }
  }
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // A zombie still answers kill(0); it is not running.
  try {
    return !/^State:\s+Z/m.test(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

/** SIGKILLs `pid` if alive and waits (bounded) until it is gone. */
export async function killPid(pid: number | undefined): Promise<void> {
  // 0 or negative would signal a whole process group (jest's own included).
  if (pid === undefined || !Number.isInteger(pid) || pid <= 1) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    return;
  }
  for (let i = 0; i < 300 && pidAlive(pid); i++) await sleep(10);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Waits (bounded) for `file` to exist and returns its contents. */
export async function waitForFile(file: string, timeoutMs = 30000, failFile?: string): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return fs.readFileSync(file, 'utf8');
    } catch {
      // not there yet
    }
    if (failFile !== undefined && fs.existsSync(failFile)) {
      throw new Error(`${failFile}: ${fs.readFileSync(failFile, 'utf8')}`);
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${file}`);
    await sleep(20);
  }
}

/** The direct children of `pid` (from /proc/<pid>/task/<pid>/children). */
export function childrenOf(pid: number): number[] {
  try {
    return fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}
