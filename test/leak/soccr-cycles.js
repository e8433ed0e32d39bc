#!/usr/bin/env node
/**
 * Checkpoint/restore loop of one loopback connection through the public API in dist/, for
 * valgrind (scripts/valgrind-soccr.sh) and for leak measurements. Each cycle:
 *   the peer writes `chunk` bytes that the server side has not read yet (they travel as the
 *   kernel's receive queue or as pendingRead), checkpointConnection(server side), restore,
 *   then a verified exchange both ways; every few cycles also the low-level calls
 *   (soccr.pause, getSkData, getQueueBytes, addresses, resume) on the live connection.
 * At the end: byte counts and SHA-256 of everything each side sent and received must match, no
 * reset; prints one JSON line with the figures.
 *
 * Usage: node [--expose-gc] test/leak/soccr-cycles.js [cycles=200] [chunk=1000] [warmup=0]
 * The first `warmup` cycles run before the baseline (fds, RSS, heap after a full GC when gc is
 * exposed); then `cycles` measured cycles, with RSS and heap (after GC) sampled every
 * cycles/10; the same readings at the end. test/leak/leak.test.ts judges the figures.
 * NODE_CRIU_LEAK_PLANT_BYTES=N keeps N bytes (malloc'd, off the JS heap) per measured cycle on
 * purpose, to check that the RSS bound catches such a leak.
 * Run it in a private network namespace (the scripts do: unshare -n).
 */
'use strict';
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');

const lib = require(path.join(__dirname, '..', '..', 'dist'));

const cycles = Number(process.argv[2] ?? 200);
const chunk = Number(process.argv[3] ?? 1000);
const warmup = Number(process.argv[4] ?? 0);
const plantBytes = Number(process.env.NODE_CRIU_LEAK_PLANT_BYTES ?? 0);
const planted = [];

function fdCount() {
  return fs.readdirSync('/proc/self/fd').length;
}

/** RSS and V8 heap in use, in MiB, after a full GC when the process runs with --expose-gc. */
async function memory() {
  // Let pending close callbacks run first (destroyed sockets are freed in libuv's close phase).
  await new Promise((resolve) => setTimeout(resolve, 20));
  if (global.gc) {
    global.gc();
    global.gc();
  }
  const usage = process.memoryUsage();
  return { rssMiB: +(usage.rss / 1048576).toFixed(2), heapMiB: +(usage.heapUsed / 1048576).toFixed(2) };
}

function pattern(seed, length) {
  const out = Buffer.alloc(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

/** Tallies one direction: bytes and a running hash. */
class Tally {
  constructor() {
    this.bytes = 0;
    this.hash = crypto.createHash('sha256');
  }
  add(buf) {
    this.bytes += buf.length;
    this.hash.update(buf);
  }
  digest() {
    return { bytes: this.bytes, sha256: this.hash.digest('hex') };
  }
}

function readExactly(socket, length, tally) {
  return new Promise((resolve, reject) => {
    let got = 0;
    const onData = (data) => {
      tally.add(data);
      got += data.length;
      if (got > length) reject(new Error(`read ${got} bytes, expected ${length}`));
      if (got >= length) {
        socket.off('data', onData);
        socket.off('error', reject);
        resolve();
      }
    };
    socket.on('data', onData);
    socket.once('error', reject);
  });
}

async function main() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const acceptedP = new Promise((resolve) => server.once('connection', resolve));
  const client = net.connect(server.address().port, '127.0.0.1');
  await new Promise((resolve, reject) => {
    client.once('connect', resolve);
    client.once('error', reject);
  });
  let side = await acceptedP;
  // Nothing is read until a cycle asks: bytes the peer sends stay in the kernel or Node's buffer.
  side.pause();
  let resets = 0;
  client.on('error', (e) => (e.code === 'ECONNRESET' || e.code === 'EPIPE' ? resets++ : undefined));

  const sentToSide = new Tally();
  const receivedBySide = new Tally();
  const sentToClient = new Tally();
  const receivedByClient = new Tally();

  let fdsBefore = fdCount();
  let baseline = await memory();
  const samples = [];
  const sampleEvery = Math.max(1, Math.floor(cycles / 10));
  const started = Date.now();
  for (let i = 0; i < warmup + cycles; i++) {
    if (i === warmup) {
      fdsBefore = fdCount();
      baseline = await memory();
    }
    if (i > warmup && (i - warmup) % sampleEvery === 0) samples.push({ cycle: i - warmup, ...(await memory()) });
    if (plantBytes > 0 && i >= warmup) planted.push(Buffer.allocUnsafeSlow(plantBytes).fill(1));
    const toSide = pattern(i * 2 + 1, chunk);
    sentToSide.add(toSide);
    client.write(toSide);
    await new Promise((resolve) => setImmediate(resolve));

    if (i % 10 === 5) {
      // Low-level calls on the live connection, then resume: nothing changes for either side.
      const handle = lib.soccr.pause(side);
      handle.getSkData();
      handle.getQueueBytes('recv');
      handle.getQueueBytes('send');
      handle.getLocalAddress();
      handle.getRemoteAddress();
      handle.resume();
    }

    const image = await lib.checkpointConnection(side, { lock: 'filter' });
    const bytes = lib.encodeConnectionImage(image);
    side = await lib.restoreConnection(lib.decodeConnectionImage(bytes));
    side.pause();

    // Verified exchange: the side reads what the client sent this cycle and answers.
    side.resume();
    await readExactly(side, chunk, receivedBySide);
    side.pause();
    const toClient = pattern(i * 2 + 2, chunk);
    sentToClient.add(toClient);
    const reply = readExactly(client, chunk, receivedByClient);
    side.write(toClient);
    await reply;
  }
  const elapsedMs = Date.now() - started;
  const end = await memory();
  const result = {
    cycles,
    warmup,
    chunk,
    gc: typeof global.gc === 'function',
    plantBytes,
    elapsedMs,
    fdsBefore,
    fdsAfter: fdCount(),
    rssBeforeMiB: baseline.rssMiB,
    rssAfterMiB: end.rssMiB,
    heapBeforeMiB: baseline.heapMiB,
    heapAfterMiB: end.heapMiB,
    samples,
    toServer: { sent: sentToSide.digest(), received: receivedBySide.digest() },
    toClient: { sent: sentToClient.digest(), received: receivedByClient.digest() },
    resets,
  };
  side.destroy();
  client.destroy();
  server.close();
  console.log(JSON.stringify(result));
  const exact =
    JSON.stringify(result.toServer.sent) === JSON.stringify(result.toServer.received) &&
    JSON.stringify(result.toClient.sent) === JSON.stringify(result.toClient.received) &&
    result.toServer.sent.bytes === (warmup + cycles) * chunk &&
    result.toClient.sent.bytes === (warmup + cycles) * chunk;
  if (!exact || resets !== 0 || result.fdsAfter !== result.fdsBefore) {
    console.error('soccr-cycles: FAILED (bytes, reset or fd count)');
    process.exitCode = 1;
  }
}

main().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
