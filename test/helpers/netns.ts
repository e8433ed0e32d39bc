/**
 * Network namespaces for tests: unique names (ncr-<pid>-<rand>-<label>), created with `ip`,
 * always deleted by destroy() (call it in afterAll/finally). Commands run with argument arrays,
 * never a shell. Nothing here touches the host's own interfaces, addresses or firewall.
 */
import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';

export function run(command: string, args: string[], input?: string): string {
  return execFileSync(command, args, { encoding: 'utf8', input, stdio: ['pipe', 'pipe', 'pipe'] });
}

export class NetnsLab {
  readonly prefix = `ncr-${process.pid}-${randomBytes(3).toString('hex')}`;
  private readonly names: string[] = [];

  /** Creates a namespace with loopback up; returns its name (`ip -n NAME ...`). */
  add(label: string): string {
    const name = `${this.prefix}-${label}`;
    run('ip', ['netns', 'add', name]);
    this.names.push(name);
    run('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
    return name;
  }

  /** The path to give createTcpSocket / restoreConnection / nsenter. */
  path(name: string): string {
    return `/run/netns/${name}`;
  }

  ip(name: string, args: string[]): string {
    return run('ip', ['-n', name, ...args]);
  }

  /** Runs a command inside the namespace. */
  exec(name: string, command: string, args: string[], input?: string): string {
    return run('nsenter', [`--net=${this.path(name)}`, '--', command, ...args], input);
  }

  /** Spawns a process inside the namespace with an IPC channel. */
  spawnNode(name: string, script: string, args: string[] = []): ChildProcess {
    return spawn('nsenter', [`--net=${this.path(name)}`, '--', process.execPath, script, ...args], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
  }

  /** TCP counters of the namespace (/proc/net/snmp "Tcp:" line), e.g. OutRsts. */
  tcpCounters(name: string): Record<string, number> {
    const lines = this.exec(name, 'cat', ['/proc/net/snmp'])
      .split('\n')
      .filter((l) => l.startsWith('Tcp:'));
    const keys = lines[0].split(/\s+/).slice(1);
    const values = lines[1].split(/\s+/).slice(1).map(Number);
    return Object.fromEntries(keys.map((k, i) => [k, values[i]]));
  }

  /** Kills what still runs inside the namespaces (deleting a namespace does not), then deletes them. */
  destroy(): void {
    for (const name of this.names.splice(0).reverse()) {
      try {
        for (const pid of run('ip', ['netns', 'pids', name]).split('\n').filter(Boolean)) {
          try {
            process.kill(Number(pid), 'SIGKILL');
          } catch {
            // exited meanwhile
          }
        }
      } catch {
        // already gone
      }
      try {
        run('ip', ['netns', 'delete', name]);
      } catch {
        // already gone
      }
    }
  }
}
