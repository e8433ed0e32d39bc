/**
 * What the client repairs when a swrk dies in the middle of a DUMP or RESTORE (SIGKILLed by an
 * abort or timeout that did not land on a notification, killed by someone else, crashed), so
 * CRIU could not unwind by itself. Measured with CRIU 4.2.1 (docs/reliability/criu-faults.md):
 *
 * DUMP, task alive (CRIU had not killed it): ptrace detaches when CRIU dies, so the task runs on,
 * but every TCP connection CRIU had dumped so far stays in repair mode and behind CRIU's
 * per-connection nftables lock (table `inet CRIU-<first 21 chars of CRIU's run id>` in the task's
 * network namespace): the peers' packets are dropped forever. The client deletes that table and
 * turns repair off on the sockets it locked (through pidfd_getfd); nothing else is touched. The
 * peers retransmit what was dropped; nothing is lost. Unless the task closed a locked connection
 * meanwhile (resumed by CRIU's death with sockets in repair, its writes fail): unlocking would
 * reset that peer, so the lock stays and the images are the way back. Locked tuples (CRIU's
 * conns4 and conns6 sets) and sockets are compared as address bytes (tuples.ts): a server on `::`
 * has IPv4-mapped sockets that CRIU locks as IPv4. A freezeCgroup CRIU froze is thawed; a `criu
 * service` worker is repaired after like a swrk. DUMP, task gone: CRIU
 * completed the dump and killed it; the lock must stay (it keeps the peers' packets from drawing
 * RSTs until the restore, which removes it). Init, this process and its ancestors are never
 * touched, whatever pid a request named.
 *
 * RESTORE: a swrk killed before post-restore usually takes its half-restored tasks with it, but
 * one may stay inside CRIU's restorer, running and never resumed: when we are the ones killing
 * swrk, the client records its descendants first and kills those afterwards (images and the lock
 * stay; the restore can be retried). Killed at post-restore (before CRIU unlocked the
 * network and turned repair off), the restored tree hangs in CRIU's restorer with its sockets in
 * repair mode, holding the pids: the client SIGKILLs it, the lock (still in place) keeps the
 * peers' packets dropped, and the images restore again. From pre-resume on the restore is
 * complete (the tree runs once ptrace detaches), so the client leaves it alone.
 */
import * as fs from 'node:fs';

import { binding } from '../native';
import { pidNamespacePath } from '../sys/netns';
import { deleteTables, listTable, listTables, setElementsOf, type NftElement, type NftTable } from '../sys/nft';
import {
  processExists,
  procStat,
  procState,
  procStatus,
  processTree,
  socketFds,
  startTimeOf,
  tracerPid,
} from '../sys/proc';
import { thawCgroup } from './freezer';
import { lockedTupleKeys, tupleKey } from './tuples';

export interface DumpRecovery {
  /** The dumped task was still alive when CRIU died. */
  taskAlive: boolean;
  /** TCP sockets of the task's tree taken out of repair mode. */
  socketsResumed: number;
  /** CRIU's lock tables removed from the task's network namespace. */
  lockTablesRemoved: string[];
  /** What could not be done (best effort: recovery never throws). */
  problems: string[];
}

export interface RestoreRecovery {
  /** Processes of a half-restored tree that were SIGKILLed (empty when there was nothing to do). */
  killed: number[];
  problems: string[];
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  const state = procState(pid);
  return state !== undefined && state !== 'Z';
}

/** A process as it was seen: its pid and start time (a reused pid has another start time). */
export interface SeenTask {
  pid: number;
  start: string;
}

/** `root`'s descendants now, each with its start time. */
export function descendantsOf(root: number): SeenTask[] {
  const seen: SeenTask[] = [];
  for (const pid of processTree(root).slice(1)) {
    const start = startTimeOf(pid);
    if (start !== undefined) seen.push({ pid, start });
  }
  return seen;
}

/** The tasks that are still the processes that were seen (not gone, pid not reused). */
export function stillThere(tasks: readonly SeenTask[]): number[] {
  return tasks.filter((task) => startTimeOf(task.pid) === task.start).map((task) => task.pid);
}

/** Never init, this process, or an ancestor of it (a bogus pid must not reach them). */
export function mayTouch(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 1) return false;
  for (let current = process.pid, hops = 0; current > 1 && hops < 1000; hops++) {
    if (current === pid) return false;
    try {
      current = Number(procStatus(current)?.get('PPid') ?? 0);
    } catch {
      break;
    }
  }
  return true;
}

/**
 * CRIU's run ids from the first lines of its log ("CRIU run id = <uuid>"; CRIU 4.2.1 logs two, the
 * service's and the worker's, and names its lock table after the second).
 */
function readCriuRunIds(logPath: string | undefined): string[] {
  if (logPath === undefined) return [];
  let fd: number | undefined;
  try {
    fd = fs.openSync(logPath, 'r');
    const head = Buffer.alloc(4096);
    const text = head.subarray(0, fs.readSync(fd, head, 0, head.length, 0)).toString('utf8');
    return [...text.matchAll(/CRIU run id = ([0-9a-f-]+)/g)].map((m) => m[1]);
  } catch {
    return [];
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

interface TreeSocket {
  pid: number;
  fd: number;
  /** The 4-tuple (own, peer) as tuples.ts's key: compared as bytes with CRIU's lock sets. */
  tuple?: string;
  repair: boolean;
}

/** The TCP sockets of `pids`: 4-tuple and whether they are in repair mode (via pidfd_getfd). */
function treeSockets(pids: number[], problems: string[]): TreeSocket[] {
  const { pidfdGetfd, socketOps } = binding();
  const found: TreeSocket[] = [];
  for (const pid of pids) {
    for (const { fd: entry } of socketFds(pid)) {
      let fd = -1;
      try {
        fd = pidfdGetfd(pid, Number(entry));
        const info = socketOps.socketInfo(fd);
        if (info.tcpState < 0 || info.acceptConn) continue;
        const socket: TreeSocket = { pid, fd: Number(entry), repair: info.repair === 1 };
        try {
          const own = socketOps.sockName(fd);
          const peer = socketOps.peerName(fd);
          socket.tuple = tupleKey(own.address, own.port, peer.address, peer.port);
        } catch {
          // not connected: no tuple to match
        }
        found.push(socket);
      } catch (error) {
        problems.push(`pid ${pid} fd ${entry}: ${(error as Error).message}`);
      } finally {
        if (fd >= 0) socketOps.closeFd(fd);
      }
    }
  }
  return found;
}

/** Turns repair off on the sockets that are in it; returns how many. */
function resumeRepaired(sockets: TreeSocket[], problems: string[]): number {
  const { pidfdGetfd, socketOps } = binding();
  let resumed = 0;
  for (const socket of sockets.filter((s) => s.repair)) {
    let fd = -1;
    try {
      fd = pidfdGetfd(socket.pid, socket.fd);
      // SO_REUSEADDR is lost with repair off (the kernel resets it) and its value before the
      // dump is unknown here; connected sockets rarely rely on it.
      socketOps.setRepair(fd, false);
      resumed++;
    } catch (error) {
      problems.push(`pid ${socket.pid} fd ${socket.fd}: repair off: ${(error as Error).message}`);
    } finally {
      if (fd >= 0) socketOps.closeFd(fd);
    }
  }
  return resumed;
}

/** SIGSTOPs the tree of `pid` and waits (≤ 1 s) until every member is stopped; true if it sent. */
async function stopTree(pid: number): Promise<boolean> {
  const members = processTree(pid);
  signalTree(pid, 'SIGSTOP');
  const stoppedOrGone = (member: number): boolean => {
    try {
      // The state: T (stopped), t (traced), Z/X (gone).
      const state = procStat(member)?.state;
      return state === undefined || /^[TtZX]$/.test(state);
    } catch {
      return true;
    }
  };
  for (let i = 0; i < 100 && !members.every(stoppedOrGone); i++)
    await new Promise((resolve) => setTimeout(resolve, 10));
  return members.length > 0;
}

/** Sends `signal` to every process of the tree rooted at `pid` (ignoring ones that are gone). */
export function signalTree(pid: number, signal: NodeJS.Signals): void {
  for (const member of processTree(pid)) {
    try {
      process.kill(member, signal);
    } catch {
      // gone
    }
  }
}

export interface DumpRepairOptions {
  /** The freezer cgroup CRIU froze for the dump (its `freezeCgroup`): thawed first. */
  thawCgroup?: string;
  /**
   * CRIU was a `criu service` worker, not our child: its socket ends before its exit has let go of
   * the ptraced tasks (the repair waits until nothing traces them), and its run id is not in the
   * request's log (its lock table is found by the tuples it locks).
   */
  service?: boolean;
  /**
   * CRIU ran with network_lock 'skip': the caller holds the connections with a lock of its own
   * (and lifts it), CRIU made no table. Every socket of the tree in repair mode was put there by
   * this CRIU (ptrace is exclusive), so each is taken out of it.
   */
  lockSkipped?: boolean;
}

/** How long a dead tracer's tasks may stay traced before the repair goes on regardless. */
const UNTRACE_WAIT_MS = 5000;

async function waitUntraced(pid: number): Promise<void> {
  const traced = (): boolean => processTree(pid).some((member) => (tracerPid(member) ?? 0) !== 0);
  for (let i = 0; i < UNTRACE_WAIT_MS / 10 && traced(); i++) await new Promise((resolve) => setTimeout(resolve, 10));
}

/**
 * After a DUMP of `pid` whose swrk died without replying (and is reaped). If the task lives and
 * every 4-tuple in CRIU's lock table still belongs to one of its sockets: delete the table and
 * turn repair off on its sockets; the connections carry on. If the task had closed a locked
 * connection meanwhile (a task resumed by CRIU's death while its sockets were in repair mode
 * gets write errors and may close them, silently), unlocking would answer that connection's peer
 * with RST: the lock and repair state stay, and the images (complete if CRIU got to post-dump) are
 * the way back. `stopped`: the client SIGSTOPped the tree before killing swrk; it is continued.
 */
export async function recoverUnfinishedDump(
  pid: number,
  logPath: string | undefined,
  stopped = false,
  more: DumpRepairOptions = {},
): Promise<DumpRecovery> {
  const problems: string[] = [];
  try {
    if (more.service === true) await waitUntraced(pid);
    if (more.thawCgroup !== undefined) {
      // Stopped before the thaw, so a task let go cannot run (and close a locked connection)
      // before the repair has looked at it: the pending SIGSTOP is taken on its way out of the
      // freezer.
      if (mayTouch(pid)) {
        signalTree(pid, 'SIGSTOP');
        stopped = true;
      }
      try {
        thawCgroup(more.thawCgroup);
      } catch (error) {
        problems.push(`thawing cgroup ${more.thawCgroup}: ${(error as Error).message}`);
      }
    }
    if (!alive(pid)) return { taskAlive: false, socketsResumed: 0, lockTablesRemoved: [], problems };
    const lockTablesRemoved: string[] = [];
    if (!mayTouch(pid)) {
      problems.push(`pid ${pid} is init, this process or one of its ancestors: left alone`);
      return { taskAlive: true, socketsResumed: 0, lockTablesRemoved, problems };
    }
    if (!stopped) {
      // CRIU's death let the task run again, sockets still in repair mode: it may close one at any
      // moment (a write fails). Stop it while we look and unlock, so a connection cannot be closed
      // between "still there" and "lock deleted" (its peer would then meet RST).
      stopped = await stopTree(pid);
    }
    const sockets = treeSockets(processTree(pid), problems);
    // Only what this run of CRIU did is touched: its lock table, named after its run id (the first
    // line of its log; CRIU truncates the name to CRIU- plus 21 characters of the id in 4.2.1), and
    // the sockets whose 4-tuples that table locks (CRIU turns repair on right before adding each).
    // No run id in the log: CRIU died before doing anything (or logs elsewhere: then nothing is
    // touched, see docs/reliability/criu-faults.md). A `criu service` worker does not log its run
    // id in the request's log: its table is the one whose every locked tuple is a socket of this
    // tree in repair mode (no other CRIU can be dumping this task: ptrace is exclusive).
    if (more.lockSkipped === true) {
      const socketsResumed = resumeRepaired(sockets, problems);
      return { taskAlive: true, socketsResumed, lockTablesRemoved, problems };
    }
    const runIds = readCriuRunIds(logPath).map((id) => `CRIU-${id}`);
    const byTuples = runIds.length === 0 && more.service === true;
    if (runIds.length === 0 && !byTuples) return { taskAlive: true, socketsResumed: 0, lockTablesRemoved, problems };
    const live = new Set(sockets.map((s) => s.tuple).filter(Boolean));
    const repairing = new Set(sockets.filter((s) => s.repair).map((s) => s.tuple));
    const tables: string[] = [];
    const locked = new Set<string>();
    const orphans: string[] = [];
    const nft = { netns: pidNamespacePath(pid), timeoutMs: 10_000 };
    try {
      const listed = (await listTables({ ...nft, family: 'inet' }))
        .map((t) => t.name)
        .filter((name) => /^CRIU-[0-9a-f-]+$/.test(name));
      for (const table of listed.filter(
        (name) => byTuples || (name.length >= 'CRIU-'.length + 8 && runIds.some((full) => full.startsWith(name))),
      )) {
        // The whole table, not `list set`: CRIU makes the table before its sets, and a table
        // without its set yet locked nothing (it is deleted like any other of this run).
        const listing = await listTable({ family: 'inet', name: table }, nft);
        // IPv4 connections (IPv4-mapped ones of an IPv6 socket included) in conns4, IPv6 in conns6.
        const elements = [...setElementsOf(listing, 'conns4'), ...setElementsOf(listing, 'conns6')];
        const ours = (element: NftElement): boolean => lockedTupleKeys(element).some((key) => repairing.has(key));
        if (byTuples && (elements.length === 0 || !elements.every(ours))) continue;
        tables.push(table);
        for (const element of elements) {
          const keys = lockedTupleKeys(element);
          keys.forEach((key) => locked.add(key));
          // CRIU locks both directions; one of them is the socket's own view.
          if (!keys.some((key) => live.has(key))) orphans.push(element.join(' . '));
        }
      }
    } catch (error) {
      problems.push((error as Error).message);
    }
    if (orphans.length > 0) {
      problems.push(
        `the task closed ${orphans.length / 2} locked connection(s) while in repair mode (${orphans.join(', ')}); ` +
          'the lock stays (unlocking would reset them): restore from the images to save them',
      );
      return { taskAlive: true, socketsResumed: 0, lockTablesRemoved, problems };
    }
    for (const table of tables) {
      try {
        const gone: NftTable[] = await deleteTables([{ family: 'inet', name: table }], nft);
        if (gone.length > 0) lockTablesRemoved.push(table);
      } catch (error) {
        problems.push((error as Error).message);
      }
    }
    // After the unlock, so the window probe that repair-off sends reaches the peer at once.
    const socketsResumed = resumeRepaired(
      sockets.filter((s) => s.tuple !== undefined && locked.has(s.tuple)),
      problems,
    );
    return { taskAlive: true, socketsResumed, lockTablesRemoved, problems };
  } finally {
    if (stopped) signalTree(pid, 'SIGCONT');
  }
}

/**
 * After a RESTORE whose swrk died without replying before pre-resume: SIGKILLs the half-restored
 * trees under `roots` (the root task named by post-restore, or, killed before post-restore, the
 * tasks swrk had forked by then) — they can never resume — and waits until they are gone.
 */
export async function recoverUnfinishedRestore(roots: readonly number[]): Promise<RestoreRecovery> {
  const problems: string[] = [];
  const tree: number[] = [];
  for (const root of roots) {
    if (!mayTouch(root)) {
      problems.push(`pid ${root} is init, this process or one of its ancestors: left alone`);
      continue;
    }
    for (const member of processTree(root))
      if (!tree.includes(member) && alive(member) && mayTouch(member)) tree.push(member);
  }
  const killed: number[] = [];
  for (const member of tree.reverse()) {
    try {
      process.kill(member, 'SIGKILL');
      killed.push(member);
    } catch (error) {
      problems.push(`kill ${member}: ${(error as Error).message}`);
    }
  }
  // Orphaned when CRIU died: the restored pids are free again only once their new parent (init or
  // a subreaper) has reaped them, and a retried restore needs exactly those pids.
  const exists = (member: number): boolean => processExists(member);
  for (let i = 0; i < 500 && killed.some(exists); i++) await new Promise((resolve) => setTimeout(resolve, 10));
  const left = killed.filter(exists);
  if (left.length > 0)
    problems.push(
      `pids ${left.join(', ')} were not reaped within 5 s (a retried restore fails with EEXIST until they are)`,
    );
  return { killed, problems };
}
