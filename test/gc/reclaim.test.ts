/**
 * Objects dropped without their close call are reclaimed by the GC, each part in a child process
 * with --expose-gc (test/fixtures/gc-reclaim/child.js):
 *  - 2,000 SoccrHandles paused by fd and dropped without resume()/release(): every socket leaves
 *    repair mode and every dup is closed; the connections still echo; 500 handles of fresh
 *    sockets (pauseNewSocket, the caller closing its fd) dropped: their dups are closed;
 *  - SeqpacketTransports dropped without close(), ended by the peer's EOF or unref()'d: collected,
 *    fds closed (a ref()'d open one is pinned like a ref()'d net.Socket, by design);
 *  - Criu clients that made a call and were never closed: no swrk child, no fd left, collected;
 *  - restored net.Sockets dropped without destroy(): when the peer ends, they close and are
 *    collected.
 */
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';

const CHILD = path.join(__dirname, '..', 'fixtures', 'gc-reclaim', 'child.js');
/** Under npm run test:asan RSS is ASan's quarantine (freed memory kept up to 256 MiB), not ours. */
const underAsan = (process.env.LD_PRELOAD ?? '').includes('libasan');

interface Memory {
  rssMiB: number;
  heapMiB: number;
}

function part<T>(name: string): T {
  const out = execFileSync(process.execPath, ['--expose-gc', CHILD, name], { encoding: 'utf8', timeout: 120_000 });
  process.stdout.write(`gc reclaim (${name}): ${out}`);
  return JSON.parse(out) as T;
}

it('SoccrHandles dropped without resume() or release(): repair off, dups closed, memory back', () => {
  const r = part<{
    dropped: number;
    maxInRepair: number;
    inRepairAfter: number;
    gcRoundsMax: number;
    freshFdsWhileAlive: number;
    fdsBefore: number;
    fdsAfter: number;
    memBefore: Memory;
    memAfter: Memory;
    echoed: boolean;
  }>('handles');
  expect(r.dropped).toBe(2500);
  expect(r.maxInRepair).toBe(100); // they really were paused
  expect(r.gcRoundsMax).toBeGreaterThanOrEqual(0); // every round was reclaimed (-1: not within 50 GCs)
  expect(r.inRepairAfter).toBe(0);
  expect(r.freshFdsWhileAlive).toBe(500);
  expect(r.fdsAfter).toBe(r.fdsBefore);
  expect(r.echoed).toBe(true);
  // 2,500 handles each holding native memory (a libsoccr handle, saved queues): a leak of even
  // 1 KiB each would show as 2.4 MiB of heap or RSS.
  expect(r.memAfter.heapMiB - r.memBefore.heapMiB).toBeLessThan(1);
  if (!underAsan) expect(r.memAfter.rssMiB - r.memBefore.rssMiB).toBeLessThan(8);
});

it('SeqpacketTransports dropped without close() after EOF or unref(): collected, fds closed', () => {
  const r = part<{
    transports: number;
    fdsWhileAlive: number;
    rounds: number;
    collected: number;
    fdsBefore: number;
    fdsAfter: number;
  }>('transport');
  expect(r.fdsWhileAlive).toBe(20);
  expect(r.collected).toBe(20);
  expect(r.fdsAfter).toBe(r.fdsBefore);
});

it('Criu clients never closed: no swrk child, no fd left, collected', () => {
  const r = part<{ clients: number; collected: number; children: string; fdsBefore: number; fdsAfter: number }>('criu');
  expect(r.children).toBe('');
  expect(r.fdsAfter).toBe(r.fdsBefore);
  expect(r.collected).toBe(r.clients);
});

it('restored net.Sockets dropped without destroy(): closed when the peer ends, collected', () => {
  const r = part<{ sockets: number; echoed: boolean; collected: number; fdsBefore: number; fdsAfter: number }>(
    'restored',
  );
  expect(r.echoed).toBe(true);
  expect(r.fdsAfter).toBe(r.fdsBefore - 40);
  expect(r.collected).toBe(r.sockets);
});
