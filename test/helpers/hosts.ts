/**
 * "Hosts" on one machine for tests: each host is a network namespace whose eth0 sits on a bridge
 * (in a switch namespace of its own), plus, for what runs on it, a private mount namespace with a
 * tmpfs on its work directory, so one host's files (images, sockets) cannot be seen by another:
 * whatever must reach the other host has to go over the network.
 *
 *   client(s) 10.77.0.10 ── br0 (switch netns) ── A 10.77.0.1 (service address 10.77.0.100 starts here)
 *                                               └─ B 10.77.0.2
 *
 * Everything has a unique name (ncr-<pid>-<rand>-<label>) and destroy() removes it all, including
 * the processes started with spawnOnHost. Commands take argument arrays; the one shell line used
 * (mount, then exec) gets its values as positional parameters.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { childrenOf } from '../../lib/sys/proc';
import { NetnsLab, run } from './netns';
import { waitUntil } from './wait';

export interface LabHost {
  label: string;
  /** `ip netns` name. */
  netns: string;
  /** /run/netns/NAME. */
  netnsPath: string;
  /** Its own address on the shared segment. */
  address: string;
  mac: string;
  /** Private to the host: a tmpfs mounted here inside the host's mount namespace (empty dir outside). */
  workDir: string;
}

export const SUBNET_PREFIX = '10.77.0';
export const SERVICE_ADDRESS = `${SUBNET_PREFIX}.100`;
export const SERVICE_CIDR = `${SERVICE_ADDRESS}/24`;

const MOUNT_AND_EXEC = 'mount -t tmpfs -o mode=0700,size=2g tmpfs "$0" && exec "$@"';

export class HostLab {
  readonly lab = new NetnsLab();
  readonly switchNs: string;
  readonly root: string;
  private readonly hosts = new Map<string, LabHost>();
  private readonly children = new Set<ChildProcess>();
  private nextIndex = 1;

  constructor() {
    this.root = fs.mkdtempSync(path.join(os.tmpdir(), 'ncr-hosts-'));
    fs.chmodSync(this.root, 0o711);
    this.switchNs = this.lab.add('sw');
    this.lab.ip(this.switchNs, ['link', 'add', 'br0', 'type', 'bridge']);
    this.lab.ip(this.switchNs, ['link', 'set', 'br0', 'up']);
  }

  /** A host on the segment; `lastOctet` picks its address (default: 1, 2, ...). */
  addHost(label: string, lastOctet = this.nextIndex++): LabHost {
    const netns = this.lab.add(label);
    const mac = `02:00:00:00:00:${lastOctet.toString(16).padStart(2, '0')}`;
    const port = `p${lastOctet}`;
    // veth: eth0 in the host, its peer on the bridge.
    this.lab.ip(this.switchNs, ['link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns]);
    this.lab.ip(this.switchNs, ['link', 'set', port, 'master', 'br0', 'up']);
    this.lab.ip(netns, ['link', 'set', 'eth0', 'address', mac]);
    this.lab.ip(netns, ['addr', 'add', `${SUBNET_PREFIX}.${lastOctet}/24`, 'dev', 'eth0']);
    this.lab.ip(netns, ['link', 'set', 'eth0', 'up']);
    const workDir = path.join(this.root, label);
    fs.mkdirSync(workDir, { mode: 0o700 });
    const host: LabHost = {
      label,
      netns,
      netnsPath: this.lab.path(netns),
      address: `${SUBNET_PREFIX}.${lastOctet}`,
      mac,
      workDir,
    };
    this.hosts.set(label, host);
    return host;
  }

  host(label: string): LabHost {
    const host = this.hosts.get(label);
    if (host === undefined) throw new Error(`no host ${label}`);
    return host;
  }

  ip(host: LabHost, args: string[]): string {
    return this.lab.ip(host.netns, args);
  }

  /** Runs a command in the host's network namespace (the machine's mount namespace). */
  exec(host: LabHost, command: string, args: string[]): string {
    return this.lab.exec(host.netns, command, args);
  }

  /**
   * Spawns `command args` on the host: its network namespace and, with `privateMount` (default),
   * a new mount namespace where host.workDir is a fresh tmpfs. Killed (SIGKILL) by destroy().
   *
   * `privatePid` (with privateMount) also gives it a pid namespace of its own, as another host has
   * (post-copy needs it: the source tree keeps its pids until every page is served, and the target
   * restores the same pids): `unshare --pid --fork --mount-proc --kill-child`, so the returned
   * child is unshare, `command` is pid 1 of the new namespace (its real pid: mainPidOf), sees only
   * that namespace in /proc, and reports pids as seen there (a restored tree's pid is the one it
   * had on the source). When `command` exits, or the child is killed, everything in that
   * namespace dies with it (a host going down). unshare ignores SIGTERM: signal mainPidOf's pid.
   */
  spawnOnHost(
    host: LabHost,
    command: string,
    args: string[],
    options: SpawnOptions & { privateMount?: boolean; privatePid?: boolean } = {},
  ): ChildProcess {
    const { privateMount = true, privatePid = false, ...spawnOptions } = options;
    if (privatePid && !privateMount) throw new Error('privatePid needs privateMount');
    const inner = privateMount
      ? [
          'unshare',
          '--mount',
          ...(privatePid ? ['--pid', '--fork', '--mount-proc', '--kill-child'] : []),
          '--propagation',
          'private',
          '--',
          'sh',
          '-c',
          MOUNT_AND_EXEC,
          host.workDir,
          command,
          ...args,
        ]
      : [command, ...args];
    const child = spawn('nsenter', [`--net=${host.netnsPath}`, '--', ...inner], {
      stdio: ['ignore', 'pipe', 'pipe'],
      ...spawnOptions,
    });
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    return child;
  }

  /** The real pid of `command` from spawnOnHost (pid 1 of its namespace with privatePid), once it runs. */
  async mainPidOf(child: ChildProcess, privatePid: boolean): Promise<number> {
    if (!privatePid) return child.pid as number;
    let pid: number | undefined;
    await waitUntil(
      () => {
        pid = childrenOf(child.pid as number)[0];
        return pid !== undefined;
      },
      { what: 'the process in its own pid namespace' },
    );
    return pid as number;
  }

  /** The MAC the host's neighbour cache holds for `address` (undefined if none). */
  neighbourMac(host: LabHost, address: string): string | undefined {
    const out = this.ip(host, ['-j', 'neigh', 'show', 'to', address, 'dev', 'eth0']);
    const entries = JSON.parse(out || '[]') as Array<{ lladdr?: string }>;
    return entries[0]?.lladdr;
  }

  async destroy(): Promise<void> {
    const exits = [...this.children].map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          child.once('exit', () => resolve());
          child.kill('SIGKILL');
        }),
    );
    await Promise.race([Promise.all(exits), new Promise((r) => setTimeout(r, 5000).unref())]);
    this.lab.destroy();
    fs.rmSync(this.root, { recursive: true, force: true });
  }
}

/** Adds the service address to a host (where the server first runs). */
export function addServiceAddress(lab: HostLab, host: LabHost): void {
  run('ip', ['-n', host.netns, 'addr', 'add', SERVICE_CIDR, 'dev', 'eth0']);
}
