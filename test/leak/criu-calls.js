#!/usr/bin/env node
/**
 * CRIU RPC call loop through the public API in dist/, for the leak test: each call is
 * `new Criu()`, `version()` (a fresh `criu swrk`, a SEQPACKET socketpair, one request and reply)
 * and `close()`. The first `warmup` calls run before the baseline (fds, RSS and heap after a full
 * GC when gc is exposed), then `calls` measured calls with RSS/heap sampled every calls/10, and
 * the same readings at the end. Prints one JSON line; test/leak/leak.test.ts judges the figures.
 *
 * Usage: node [--expose-gc] test/leak/criu-calls.js [calls=100] [warmup=0]   (CRIU_PATH honoured)
 */
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const { Criu } = require(path.join(__dirname, '..', '..', 'dist'));

const calls = Number(process.argv[2] ?? 100);
const warmup = Number(process.argv[3] ?? 0);

function fdCount() {
  return fs.readdirSync('/proc/self/fd').length;
}

async function memory() {
  // A settle time before measuring (pending close callbacks run first), not a wait for one event.
  await new Promise((resolve) => setTimeout(resolve, 20));
  if (global.gc) {
    global.gc();
    global.gc();
  }
  const usage = process.memoryUsage();
  return { rssMiB: +(usage.rss / 1048576).toFixed(2), heapMiB: +(usage.heapUsed / 1048576).toFixed(2) };
}

function childCount() {
  // Our children (swrk must have been reaped after each close()).
  const children = fs.readFileSync(`/proc/self/task/${process.pid}/children`, 'utf8').trim();
  return children === '' ? 0 : children.split(/\s+/).length;
}

async function main() {
  let fdsBefore = fdCount();
  let baseline = await memory();
  const samples = [];
  const sampleEvery = Math.max(1, Math.floor(calls / 10));
  let version = '';
  const started = Date.now();
  for (let i = 0; i < warmup + calls; i++) {
    if (i === warmup) {
      fdsBefore = fdCount();
      baseline = await memory();
    }
    if (i > warmup && (i - warmup) % sampleEvery === 0) samples.push({ call: i - warmup, ...(await memory()) });
    const criu = new Criu();
    version = (await criu.version()).text;
    await criu.close();
  }
  const elapsedMs = Date.now() - started;
  const end = await memory();
  const result = {
    calls,
    warmup,
    gc: typeof global.gc === 'function',
    version,
    elapsedMs,
    fdsBefore,
    fdsAfter: fdCount(),
    childrenAfter: childCount(),
    rssBeforeMiB: baseline.rssMiB,
    rssAfterMiB: end.rssMiB,
    heapBeforeMiB: baseline.heapMiB,
    heapAfterMiB: end.heapMiB,
    samples,
  };
  console.log(JSON.stringify(result));
  if (result.fdsAfter !== result.fdsBefore || result.childrenAfter !== 0) {
    console.error('criu-calls: FAILED (fd count or children left)');
    process.exitCode = 1;
  }
}

main().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
