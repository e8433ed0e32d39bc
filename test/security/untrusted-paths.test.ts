/**
 * Paths that root would open, taken from data or from options: an image's `lock` is never opened
 * unless it names a lock this process made (or one the caller passes in `locks`), and every
 * namespace path must be a namespace file, opened without following a symlink and without
 * blocking. A FIFO, a regular file, a device and a symlink are refused typed, at once, and leave
 * no fd and no socket in repair mode.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { checkpointConnection, NftablesLock, restoreConnection, soccr, type ConnectionImage } from '../../lib';
import { lockTableCommands } from '../../lib/soccr/nft/lock';
import { deleteTables, nftBatch } from '../../lib/sys/nft';
import { fdsInRepairMode, tcpPair, type TcpPair } from '../helpers/soccr';
import { newFds, openFds } from '../helpers/fds';

let dir: string;
let fifo: string;
let namespace: string;
/**
 * Opens the FIFO for writing after a while: the code before the fix blocked in open(2) of the
 * FIFO on the main thread, which no jest timeout can interrupt; this writer lets such an open
 * return (late), so that version fails the timing and code assertions instead of hanging.
 */
let unblocker: ChildProcess;

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ncr-untrusted-'));
  fifo = path.join(dir, 'fifo');
  execFileSync('mkfifo', [fifo]);
  namespace = `ncr-untrusted-${process.pid}`;
  execFileSync('ip', ['netns', 'add', namespace]);
  fs.writeFileSync(path.join(dir, 'file'), '');
  fs.symlinkSync(`/run/netns/${namespace}`, path.join(dir, 'link'));
  // Its own process group: the kill below must reach its `sleep` too, not only the shell.
  unblocker = spawn('sh', ['-c', 'sleep 3; exec 3>"$1"; sleep 1', 'sh', fifo], { stdio: 'ignore', detached: true });
});

afterAll(async () => {
  try {
    process.kill(-(unblocker.pid as number), 'SIGKILL');
  } catch {
    // the group is gone already
  }
  execFileSync('ip', ['netns', 'del', namespace]);
  fs.rmSync(dir, { recursive: true, force: true });
  await NftablesLock.destroyProcessLocks();
});

async function refusedFast(fn: () => Promise<unknown>): Promise<{ code?: string; ms: number }> {
  const started = Date.now();
  try {
    await fn();
  } catch (error) {
    return { code: (error as { code?: string }).code, ms: Date.now() - started };
  }
  throw new Error('not refused');
}

async function checkpointed(pair: TcpPair): Promise<ConnectionImage> {
  return checkpointConnection(pair.accepted);
}

describe("an image's lock is not a path to open", () => {
  it('a tampered image whose lock names a FIFO is refused at once (ERR_UNTRUSTED_LOCK), nothing in repair mode', async () => {
    const pair = await tcpPair(4);
    try {
      const image = await checkpointed(pair);
      const fds = openFds();
      const tampered = { ...image, lock: { table: 'node_criu_1_deadbeef', netns: fifo } };
      const result = await refusedFast(() => restoreConnection(tampered));
      expect(result.code).toBe('ERR_UNTRUSTED_LOCK');
      expect(result.ms).toBeLessThan(1000);
      expect(fdsInRepairMode()).toEqual([]);
      expect(newFds(fds)).toEqual([]);
      // The genuine image (its lock is this process's own) still restores.
      const socket = await restoreConnection(image);
      expect(soccr.isInRepairMode(socket)).toBe(false);
      socket.destroy();
    } finally {
      await pair.close();
    }
  });

  it("another process's lock: in the restore's own namespace it is used; in another, only when passed in `locks`", async () => {
    const table = `node_criu_foreign_${process.pid}`;
    const elsewhere = `/run/netns/${namespace}`;
    // Made outside this process's NftablesLock, as another process's lock would be.
    await nftBatch(lockTableCommands(table));
    await nftBatch(lockTableCommands(table), { netns: elsewhere });
    const pair = await tcpPair(4);
    const next = await tcpPair(4);
    try {
      const image = await checkpointConnection(pair.accepted, { lock: NftablesLock.fromRef({ table }) });
      expect(image.lock).toEqual({ table });
      const socket = await restoreConnection(image);
      // Released from that table: the peer's data reaches the restored socket.
      const got = new Promise<Buffer>((resolve) => socket.once('data', resolve));
      pair.client.write('after');
      expect((await got).toString()).toBe('after');
      socket.destroy();

      const ref = { table, netns: elsewhere };
      const other = await checkpointConnection(next.accepted, { lock: NftablesLock.fromRef(ref) });
      expect(other.lock).toEqual(ref);
      expect((await refusedFast(() => restoreConnection(other))).code).toBe('ERR_UNTRUSTED_LOCK');
      expect(fdsInRepairMode()).toEqual([]);
      (await restoreConnection(other, { locks: [NftablesLock.fromRef(ref)] })).destroy();
    } finally {
      await pair.close();
      await next.close();
      await deleteTables([{ family: 'inet', name: table }]);
    }
  });
});

describe('namespace paths must be namespace files', () => {
  const kinds = (): [string, string][] => [
    ['a FIFO', fifo],
    ['a regular file', path.join(dir, 'file')],
    ['a device', '/dev/null'],
    ['a symlink to a namespace', path.join(dir, 'link')],
  ];

  it('new sockets (createTcpSocket, restore) refuse them with ERR_INVALID_NETNS, at once, leaving nothing', async () => {
    const pair = await tcpPair(4);
    try {
      const image = await checkpointed(pair);
      for (const [, netns] of kinds()) {
        const fds = openFds();
        const created = await refusedFast(async () => soccr.createTcpSocket(4, { netns }));
        expect([netns, created.code]).toEqual([netns, 'ERR_INVALID_NETNS']);
        expect(created.ms).toBeLessThan(1000);
        const restored = await refusedFast(() => restoreConnection(image, { netns }));
        expect([netns, restored.code]).toEqual([netns, 'ERR_INVALID_NETNS']);
        expect(fdsInRepairMode()).toEqual([]);
        expect(newFds(fds)).toEqual([]);
      }
      // Control: the namespace itself, by its path and by a /proc link.
      soccr.closeFd(soccr.createTcpSocket(4, { netns: `/run/netns/${namespace}` }));
      soccr.closeFd(soccr.createTcpSocket(4, { netns: '/proc/self/ns/net' }));
      (await restoreConnection(image)).destroy();
    } finally {
      await pair.close();
    }
  });

  it('locks (NftablesLock.create, fromRef().add) refuse them the same way', async () => {
    for (const [, netns] of kinds()) {
      const fds = openFds();
      const created = await refusedFast(() => NftablesLock.create({ netns }));
      expect([netns, created.code]).toEqual([netns, 'ERR_INVALID_NETNS']);
      expect(created.ms).toBeLessThan(1000);
      const tuple = {
        local: { family: 4 as const, address: '127.0.0.1', port: 1 },
        remote: { family: 4 as const, address: '127.0.0.1', port: 2 },
      };
      const added = await refusedFast(() => NftablesLock.fromRef({ table: 'node_criu_x', netns }).add([tuple]));
      expect([netns, added.code]).toEqual([netns, 'ERR_INVALID_NETNS']);
      expect(newFds(fds)).toEqual([]);
    }
  });
});
