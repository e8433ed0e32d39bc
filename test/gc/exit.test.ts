/**
 * A process that exits while it holds paused connections leaves nothing stuck.
 *
 * The child (test/fixtures/exit-paused/child.js) connects 4 times to a server here, pauses two
 * connections (repair mode, no lock) and checkpoints two with the default nftables lock without
 * ever restoring them, then exits: naturally, through process.exit(), through an uncaught
 * exception, or killed by SIGTERM or SIGKILL.
 *
 * What happens, and what "nothing stuck" means here:
 *  - The kernel closes the dead process's sockets. A socket in repair mode is closed silently (no
 *    FIN, no RST); the checkpointed originals were already closed that way. So the peer (here)
 *    still sees its side ESTABLISHED and learns of the end on its next packet: the 4-tuple has no
 *    socket any more and the kernel answers with RST, the peer's write fails with ECONNRESET.
 *    Exception: when the event loop simply ends, Node tears the environment down and the paused
 *    handles' finalizers turn repair off, so those connections close normally (FIN, peer EOF).
 *    That is the same as a peer whose host vanished; nothing more is possible for a connection
 *    that was paused but never restored.
 *  - The lock table (node_criu_<pid>_<starttime>_<ns>_<random>) is the library's: as long as it
 *    exists, the peer's packets of the locked 4-tuples are dropped, the peer retransmits for ~15
 *    minutes (tcp_retries2) and its connection hangs. The library deletes it in an 'exit' handler,
 *    which runs for a natural end, process.exit() and an uncaught exception. SIGTERM (default
 *    action) and SIGKILL end the process without any JS running: the table stays, named after the
 *    dead process (pid and start time), until the next user of the library in that namespace
 *    sweeps it: a new process's first default-lock checkpoint does (test/fixtures/exit-paused/
 *    first-checkpoint.js, after SIGTERM), and so does soccr.sweepStaleLocks() (after SIGKILL).
 *    Only then do the locked connections reset; the test checks the table is there before.
 *    test/gc/lock-sweep.test.ts covers what a sweep must never delete.
 *  - No socket is left in repair mode: the paused sockets died with their process.
 */
import { spawn } from 'node:child_process';
import * as net from 'node:net';
import * as path from 'node:path';

import { soccr } from '../../lib';
import { run } from '../helpers/netns';

const CHILD = path.join(__dirname, '..', 'fixtures', 'exit-paused', 'child.js');
const FIRST_CHECKPOINT = path.join(__dirname, '..', 'fixtures', 'exit-paused', 'first-checkpoint.js');

interface ChildReport {
  pid: number;
  ports: number[];
  repair: boolean[];
}

function lockTablesOf(pid: number): string[] {
  return run('nft', ['list', 'tables'])
    .split('\n')
    .map((line) => line.trim().split(/\s+/)[2])
    .filter((name): name is string => name !== undefined && name.startsWith(`node_criu_${pid}_`));
}

interface Peer {
  socket: net.Socket;
  /** How the connection ended for the peer: 'end' (FIN), or the error code ('ECONNRESET'). */
  outcome: Promise<string>;
}

/** The peer's side of each connection, by the child's local port, watched from the start. */
async function startServer(): Promise<{ server: net.Server; port: number; peers: Map<number, Peer> }> {
  const peers = new Map<number, Peer>();
  const server = net.createServer((socket) => {
    const outcome = new Promise<string>((resolve) => {
      socket.once('end', () => resolve('end'));
      socket.once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
    });
    peers.set(socket.remotePort as number, { socket, outcome });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as net.AddressInfo).port, peers };
}

/** The peer writes if its connection has not ended yet; resolves with how it ended. */
function outcomeAfterWrite(peer: Peer): Promise<string> {
  if (!peer.socket.destroyed && !peer.socket.writableEnded) peer.socket.write('anyone there?');
  return peer.outcome;
}

async function runChild(mode: 'natural' | 'exit' | 'throw' | 'signal', port: number, signal?: NodeJS.Signals) {
  const child = spawn(process.execPath, [CHILD, mode, String(port)], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, sig) => resolve({ code, signal: sig })),
  );
  const setupHung = setTimeout(() => child.kill('SIGKILL'), 30_000);
  const report = await new Promise<ChildReport>((resolve, reject) => {
    child.stdout.on('data', (chunk: string) => {
      stdout += chunk;
      if (stdout.includes('\n')) resolve(JSON.parse(stdout.split('\n')[0]) as ChildReport);
    });
    void exited.then((e) => reject(new Error(`child exited (${e.code ?? e.signal}) before reporting: ${stderr}`)));
  });
  clearTimeout(setupHung);
  // While the child lives: its lock table exists and holds the checkpointed connections.
  const tablesWhileAlive = lockTablesOf(report.pid);
  if (signal) child.kill(signal);
  else child.stdin.end('go\n');
  // A child that does not end is the failure this test looks for: kill it, fail with its state.
  const hung = setTimeout(() => child.kill('SIGKILL'), 30_000);
  const exit = await exited;
  clearTimeout(hung);
  return { report, exit, stderr, tablesWhileAlive };
}

/** Runs first-checkpoint.js (a new process's first default-lock checkpoint); resolves with its pid. */
async function runFirstCheckpoint(): Promise<number> {
  const child = spawn(process.execPath, [FIRST_CHECKPOINT], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const hung = setTimeout(() => child.kill('SIGKILL'), 30_000);
  const exit = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  clearTimeout(hung);
  expect({ ...exit, stderr }).toEqual({ code: 0, signal: null, stderr: '' });
  return (JSON.parse(stdout.split('\n')[0]) as { pid: number }).pid;
}

describe('a process exiting with paused and mid-checkpoint connections', () => {
  type Sweeper = 'first-checkpoint' | 'sweep-api';
  type Case = {
    name: string;
    mode: 'natural' | 'exit' | 'throw' | 'signal';
    signal?: NodeJS.Signals;
    exit: object;
    sweptBy?: Sweeper;
    pausedEnd: string[];
  };
  const reset = ['ECONNRESET', 'ECONNRESET'];
  const cases: Case[] = [
    { name: 'its event loop ends', mode: 'natural', exit: { code: 0, signal: null }, pausedEnd: ['end', 'end'] },
    { name: 'process.exit(0)', mode: 'exit', exit: { code: 0, signal: null }, pausedEnd: reset },
    { name: 'an uncaught exception', mode: 'throw', exit: { code: 1, signal: null }, pausedEnd: reset },
    {
      name: 'SIGTERM',
      mode: 'signal',
      signal: 'SIGTERM',
      exit: { code: null, signal: 'SIGTERM' },
      sweptBy: 'first-checkpoint',
      pausedEnd: reset,
    },
    {
      name: 'SIGKILL',
      mode: 'signal',
      signal: 'SIGKILL',
      exit: { code: null, signal: 'SIGKILL' },
      sweptBy: 'sweep-api',
      pausedEnd: reset,
    },
  ];
  const sweeperName = {
    'first-checkpoint': "a new process's first checkpoint",
    'sweep-api': 'soccr.sweepStaleLocks()',
  };

  for (const c of cases) {
    const tableFate = c.sweptBy ? `left (no JS runs) until ${sweeperName[c.sweptBy]} sweeps it` : 'deleted';
    it(`${c.name}: the peer's connections all end (${c.pausedEnd[0]} for the paused ones); lock table ${tableFate}`, async () => {
      const { server, port, peers } = await startServer();
      try {
        const { report, exit, stderr, tablesWhileAlive } = await runChild(c.mode, port, c.signal);
        expect(exit).toEqual(c.exit);
        if (c.mode === 'throw') expect(stderr).toMatch(/uncaught on purpose/);
        expect(report.repair).toEqual([true, true]);
        expect(tablesWhileAlive).toHaveLength(1);
        // A process lock: its name records the creator's start time and namespaces.
        expect(tablesWhileAlive[0]).toMatch(new RegExp(`^node_criu_${report.pid}_[0-9]+_[0-9a-f]{16}_[0-9a-f]{8}$`));

        const left = lockTablesOf(report.pid);
        if (c.sweptBy) {
          // No JS ran: the table is still there, named after the dead process (until it is swept
          // the peer's packets of the locked 4-tuples are dropped).
          expect(left).toEqual(tablesWhileAlive);
          if (c.sweptBy === 'first-checkpoint') {
            const sweeperPid = await runFirstCheckpoint();
            // The sweeper's own table went with its 'exit' handler.
            expect(lockTablesOf(sweeperPid)).toEqual([]);
          } else {
            const swept = await soccr.sweepStaleLocks();
            expect(swept.filter((s) => s.pid === report.pid)).toEqual([
              { table: left[0], pid: report.pid, reason: 'exited' },
            ]);
          }
          expect(lockTablesOf(report.pid)).toEqual([]);
        } else {
          expect(left).toEqual([]);
        }

        // Every connection of the dead process ends for the peer; nothing hangs. Checkpointed
        // ones (closed silently, never restored): the peer's next write meets no socket, RST.
        // Paused ones: the same after process.exit(), an uncaught exception or a signal (the
        // kernel closes a socket in repair mode silently); when the event loop ends, Node tears
        // the environment down and the handles' finalizers turn repair off first, so the kernel
        // closes them normally and the peer reads EOF.
        expect([...peers.keys()].sort()).toEqual([...report.ports].sort());
        const outcomes = await Promise.all(report.ports.map((p) => outcomeAfterWrite(peers.get(p) as Peer)));
        expect(outcomes).toEqual([...c.pausedEnd, 'ECONNRESET', 'ECONNRESET']);
      } finally {
        for (const peer of peers.values()) peer.socket.destroy();
        await new Promise((resolve) => server.close(resolve));
      }
    });
  }
});
