/**
 * Leak loops: 10,000 checkpoint/restore cycles of one connection and 1,000 CRIU RPC calls
 * (new Criu().version(), each a fresh `criu swrk`). The process's fd count must be exactly what
 * it was after a warm-up, RSS must stay within a generous bound and the heap still in use after a
 * full GC within a tighter one (a per-cycle leak of 2 KiB would exceed it). The figures are
 * printed. Nothing here asserts on time.
 */
import * as fs from 'node:fs';
import * as v8 from 'node:v8';
import * as vm from 'node:vm';

import { Criu } from '../../lib/criu';
import { checkpointConnection, restoreConnection } from '../../lib/soccr';
import { fdsInRepairMode, tcpPair } from '../helpers/soccr';
import { TrafficEndpoint, expectExactTwoWay } from '../helpers/traffic';

const SOCCR_CYCLES = 10_000;
const SOCCR_WARMUP = 500;
const CRIU_CALLS = 1_000;
const CRIU_WARMUP = 20;
/** RSS may grow this much after the warm-up (MiB). */
const RSS_BOUND_MIB = 96;

function fdCount(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

// A full GC before each reading (jest runs without --expose-gc; this is Node's documented way).
v8.setFlagsFromString('--expose-gc');
const collect = vm.runInNewContext('gc') as () => void;

function rssMiB(): number {
  collect();
  return process.memoryUsage().rss / 1048576;
}

function heapMiB(): number {
  collect();
  return process.memoryUsage().heapUsed / 1048576;
}

/** Heap still in use after a full GC may grow this much after the warm-up (MiB). */
const HEAP_BOUND_MIB = 16;

function report(what: string, figures: Record<string, number | string>): void {
  const text = Object.entries(figures)
    .map(([k, v]) => `${k}=${typeof v === 'number' ? +v.toFixed(1) : v}`)
    .join(' ');
  process.stdout.write(`leak loop (${what}): ${text}\n`);
}

it(`checkpoint/restore ${SOCCR_CYCLES} times: fd count flat, RSS bounded, bytes exact both ways`, async () => {
  const pair = await tcpPair(4);
  let side = pair.accepted;
  try {
    let fdsAfterWarmup = 0;
    let rssAfterWarmup = 0;
    let heapAfterWarmup = 0;
    for (let i = 0; i < SOCCR_CYCLES; i++) {
      if (i === SOCCR_WARMUP) {
        fdsAfterWarmup = fdCount();
        rssAfterWarmup = rssMiB();
        heapAfterWarmup = heapMiB();
      }
      // 'filter': the pair is idle between the exchanges, so the per-socket lock covers it.
      const image = await checkpointConnection(side, { lock: 'filter' });
      side = await restoreConnection(image);
      // Let the event loop turn, as it does between an application's moves: the destroyed
      // originals' handles are freed in libuv's close callbacks, which a loop of awaits alone
      // (microtasks only) would postpone to its end (measured: ~1 KiB of heap per cycle until then).
      await new Promise((resolve) => setImmediate(resolve));
    }
    const fdsAtEnd = fdCount();
    const rssAtEnd = rssMiB();
    const heapAtEnd = heapMiB();
    report('soccr', { cycles: SOCCR_CYCLES, fdsAfterWarmup, fdsAtEnd, rssAfterWarmupMiB: rssAfterWarmup, rssAtEndMiB: rssAtEnd, heapAfterWarmupMiB: heapAfterWarmup, heapAtEndMiB: heapAtEnd });
    expect(fdsAtEnd).toBe(fdsAfterWarmup);
    expect(rssAtEnd - rssAfterWarmup).toBeLessThan(RSS_BOUND_MIB);
    expect(heapAtEnd - heapAfterWarmup).toBeLessThan(HEAP_BOUND_MIB);
    expect(fdsInRepairMode()).toEqual([]);

    // The connection that moved 10,000 times still carries data both ways, exactly.
    const a = new TrafficEndpoint({ seed: 61, total: 256 * 1024 }).attach(pair.client);
    const b = new TrafficEndpoint({ seed: 62, total: 256 * 1024 }).attach(side);
    await Promise.all([a.waitForReceived(256 * 1024), b.waitForReceived(256 * 1024)]);
    expectExactTwoWay(a.report(), b.report(), { aToB: 256 * 1024, bToA: 256 * 1024 });
  } finally {
    side.destroy();
    await pair.close();
  }
}, 600_000);

it(`${CRIU_CALLS} CRIU RPC calls (new Criu().version()): fd count flat, RSS bounded`, async () => {
  let fdsAfterWarmup = 0;
  let rssAfterWarmup = 0;
  let heapAfterWarmup = 0;
  let version = '';
  for (let i = 0; i < CRIU_CALLS; i++) {
    if (i === CRIU_WARMUP) {
      fdsAfterWarmup = fdCount();
      rssAfterWarmup = rssMiB();
      heapAfterWarmup = heapMiB();
    }
    const criu = new Criu();
    version = (await criu.version()).text;
    await criu.close();
  }
  const fdsAtEnd = fdCount();
  const rssAtEnd = rssMiB();
  const heapAtEnd = heapMiB();
  report('criu', { calls: CRIU_CALLS, version, fdsAfterWarmup, fdsAtEnd, rssAfterWarmupMiB: rssAfterWarmup, rssAtEndMiB: rssAtEnd, heapAfterWarmupMiB: heapAfterWarmup, heapAtEndMiB: heapAtEnd });
  expect(version).toMatch(/^\d+\.\d+/);
  expect(fdsAtEnd).toBe(fdsAfterWarmup);
  expect(rssAtEnd - rssAfterWarmup).toBeLessThan(RSS_BOUND_MIB);
  expect(heapAtEnd - heapAfterWarmup).toBeLessThan(HEAP_BOUND_MIB);
}, 600_000);
