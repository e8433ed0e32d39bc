/**
 * Shared plumbing for the CRIU fault suites: one private network namespace per suite with a criu
 * wrapper inside it, a streaming server/peer pair (test/fixtures/criu-tcp-server.js and
 * criu-traffic-client.js) per test, a way to find and SIGKILL the swrk a call started, and the
 * end-of-test checks (both directions byte-exact, no RST on the server's port, no CRIU table,
 * no leftover child or fd).
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { Criu } from '../../lib';
import { expectExactTwoWay, type TrafficReport } from '../helpers/traffic';
import { waitUntil } from '../helpers/wait';
import {
  FIXTURES,
  Netns,
  childrenOf,
  newFds,
  openFds,
  killPid,
  makeTempDir,
  pidAlive,
  removeDir,
  sleep,
  waitForFile,
} from '../criu/helpers';

/** The notifications CRIU 4.2.1 sends here for a TCP dump and restore of a task in its own netns (measured). */
export const DUMP_STAGES = ['pre-dump', 'query-ext-files', 'post-dump'] as const;
export const RESTORE_STAGES = ['pre-restore', 'post-restore', 'pre-resume', 'post-resume'] as const;

export const CLIENT_TO_SERVER = 1024 * 1024;
export const SERVER_TO_CLIENT = 768 * 1024;
const PACE = { paceBytes: 16384, paceMs: 5 };
export const TCP = { tcpEstablished: true, networkLock: 'nftables' as const };

export interface Pair {
  serverPid: number;
  clientPid: number;
  statusDir: string;
  images: string;
  resets(): number;
  /** Waits for both reports and checks them: exact both ways, no reset, no error. */
  expectExact(): Promise<void>;
}

export class FaultLab {
  readonly netns = new Netns();
  readonly dir = makeTempDir('faults');
  readonly criu = new Criu({ criuPath: this.netns.criuWrapper(this.dir) });
  private readonly pids: number[] = [];
  private count = 0;
  private fdsAtStart = openFds();

  constructor() {
    // A fault holds CRIU's lock for seconds (a handler waiting for its timeout, init reaping a
    // killed tree every ~2 s here); the peers' retransmission backoff would then grow to tens of
    // seconds. Capping the RTO in this namespace keeps the tests short; every byte is still checked.
    execFileSync('ip', ['netns', 'exec', this.netns.name, 'sysctl', '-q', '-w', 'net.ipv4.tcp_rto_max_ms=1000']);
  }

  /** Call in beforeEach: the fd baseline for expectNothingLeft(). */
  mark(): void {
    this.fdsAtStart = openFds();
  }

  /**
   * `listen`: the server's address (default 127.0.0.1; '::' takes IPv4 clients as IPv4-mapped
   * IPv6); `connect`: where the client connects (default 127.0.0.1).
   */
  async startPair(hosts: { listen?: string; connect?: string } = {}): Promise<Pair> {
    const statusDir = path.join(this.dir, `pair-${this.count++}`);
    fs.mkdirSync(statusDir);
    const server = this.netns.spawnNode(path.join(FIXTURES, 'criu-tcp-server.js'), [
      JSON.stringify({
        statusDir,
        seed: 1000,
        total: SERVER_TO_CLIENT,
        expectIn: CLIENT_TO_SERVER,
        ...PACE,
        ...(hosts.listen !== undefined ? { host: hosts.listen } : {}),
      }),
    ]);
    this.pids.push(server.pid as number);
    const port = Number(await waitForFile(path.join(statusDir, 'port')));
    const resets = this.netns.watchResets(port);
    const client = this.netns.spawnNode(path.join(FIXTURES, 'criu-traffic-client.js'), [
      JSON.stringify({
        statusDir,
        port,
        seed: 2000,
        total: CLIENT_TO_SERVER,
        expectIn: SERVER_TO_CLIENT,
        ...PACE,
        ...(hosts.connect !== undefined ? { host: hosts.connect } : {}),
      }),
    ]);
    this.pids.push(client.pid as number);
    await waitForFile(path.join(statusDir, 'client-started'), 30000, path.join(statusDir, 'client-error'));
    // Mid-stream, both ways, before the fault.
    await waitUntil(
      () => {
        try {
          const progress = JSON.parse(fs.readFileSync(path.join(statusDir, 'client-progress'), 'utf8'));
          return progress.received >= 128 * 1024 && progress.sent >= 128 * 1024;
        } catch {
          return false; // not written yet
        }
      },
      { timeoutMs: 30_000, what: '128 KiB both ways on the client' },
    );
    const images = path.join(statusDir, 'images');
    fs.mkdirSync(images);
    return {
      serverPid: server.pid as number,
      clientPid: client.pid as number,
      statusDir,
      images,
      resets,
      async expectExact() {
        const failFile = path.join(statusDir, 'client-error');
        const clientReport = JSON.parse(
          await waitForFile(path.join(statusDir, 'client.json'), 45000, failFile),
        ) as TrafficReport;
        const serverReport = JSON.parse(
          await waitForFile(path.join(statusDir, 'server-0.json'), 45000, failFile),
        ) as TrafficReport;
        expectExactTwoWay(clientReport, serverReport, { aToB: CLIENT_TO_SERVER, bToA: SERVER_TO_CLIENT });
        expect(resets()).toBe(0);
      },
    };
  }

  /** Remembers a pid (a restored server) to kill at the end. */
  track(pid: number): void {
    this.pids.push(pid);
  }

  /** The swrk processes our process started (children that are not node: criu runs under its own loader). */
  swrkPids(): number[] {
    return childrenOf(process.pid).filter((pid) => {
      try {
        return fs.readlinkSync(`/proc/${pid}/exe`) !== process.execPath;
      } catch {
        return false;
      }
    });
  }

  /** SIGKILLs the running swrk(s) and waits until they exited (the client reaps them). */
  async killSwrk(): Promise<number> {
    const victims = this.swrkPids();
    for (const pid of victims) process.kill(pid, 'SIGKILL');
    for (let i = 0; i < 500 && victims.some((pid) => fs.existsSync(`/proc/${pid}`) && pidAlive(pid)); i++)
      await sleep(5);
    return victims.length;
  }

  /** No swrk child, no CRIU lock table, the fd count as at mark(). */
  expectNothingLeft(): void {
    expect(this.swrkPids()).toEqual([]);
    expect(this.netns.nftTables()).not.toMatch(/CRIU/);
    // fds opened since mark() and still open (an earlier suite's fd closing meanwhile is no leak).
    expect(newFds(this.fdsAtStart)).toEqual([]);
  }

  async killAll(): Promise<void> {
    for (const pid of this.pids.splice(0)) await killPid(pid);
  }

  async close(): Promise<void> {
    await this.killAll();
    await this.criu.close();
    this.netns.remove();
    removeDir(this.dir);
  }
}

export { pidAlive, sleep };
