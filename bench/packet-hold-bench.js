'use strict';
/**
 * The peer's recovery after a freeze, with its packets dropped (an nftables drop rule, as a lock)
 * or held (holdPackets), on one loopback connection in a private network namespace: the peer
 * writes while the lock is up; the lock is lifted (dropped: rule deleted; held: released) after
 * FREEZE ms; "after unlock" is how long the bytes then take to reach the socket. Dropped bytes
 * wait for the peer's next retransmission (its RTO backs off 200, 400, 800 ms); held ones are
 * re-injected at once. The "checkpoint + restore" rows do what the connections route does to the
 * socket: checkpointConnection (its default nftables lock drops the peer's packets), the freeze,
 * restoreConnection (which lifts that lock), with or without a hold in front of the lock,
 * released after the restore. Kernel timers, not scheduling, set these numbers, so they hold on
 * a busy machine. Needs root and `npm run build`.
 * Usage: node bench/packet-hold-bench.js [freeze ms list, default 100,300,700] [rounds, default 5]
 */
const { execFileSync, spawnSync } = require('node:child_process');
const net = require('node:net');
const os = require('node:os');

if (process.env.NODE_CRIU_BENCH_NETNS !== '1') {
  // Everything below runs in a throwaway network namespace (its loopback, its nft tables).
  const args = [
    '--net',
    '--',
    'sh',
    '-c',
    'ip link set lo up && exec "$0" "$@"',
    process.execPath,
    __filename,
    ...process.argv.slice(2),
  ];
  const child = spawnSync('unshare', args, { stdio: 'inherit', env: { ...process.env, NODE_CRIU_BENCH_NETNS: '1' } });
  process.exit(child.status ?? 1);
}

const { checkpointConnection, holdPackets, restoreConnection, soccr } = require('../dist');
const { deleteTables, nftBatch } = require('../dist/sys/nft');
const dropTableCommands = require('./drop-rule');

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function round(mode, freezeMs) {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = server.address().port;
  const accepted = new Promise((resolve) => server.once('connection', resolve));
  const client = net.connect(port, '127.0.0.1');
  await new Promise((resolve) => client.once('connect', resolve));
  const socket = await accepted;
  client.setNoDelay(true);
  // An RTT sample first, as a live connection has.
  client.write('x');
  await new Promise((resolve) => socket.once('data', resolve));
  const moved = mode.startsWith('moved');
  let arrived = new Promise((resolve) => socket.once('data', () => resolve(performance.now())));
  const hold = mode.endsWith('hold')
    ? await holdPackets(
        moved ? { tuples: [soccr.connectionTuple(socket)] } : { endpoints: [{ address: '127.0.0.1', port }] },
      )
    : undefined;
  // 'moved': the connection is checkpointed (libsoccr, its default nftables lock drops the peer's
  // packets) and restored after the freeze, as the connections route does.
  const image = moved ? await checkpointConnection(socket) : undefined;
  if (!hold && !moved) await nftBatch(dropTableCommands('bench_drop', { port }));
  const wrote = performance.now();
  client.write('y');
  await sleep(freezeMs);
  let restored = socket;
  if (image) {
    restored = await restoreConnection(image);
    arrived = new Promise((resolve) => restored.once('data', () => resolve(performance.now())));
  }
  const unlocked = performance.now();
  if (hold) await hold.release();
  else if (!moved) await deleteTables([{ family: 'ip', name: 'bench_drop' }]);
  const at = await arrived;
  client.destroy();
  restored.destroy();
  await new Promise((resolve) => server.close(resolve));
  return { afterUnlock: at - unlocked, stall: at - wrote };
}

const TITLES = {
  drop: 'dropped (lock)',
  hold: 'held (holdPackets)',
  'moved-drop': 'checkpoint + restore (libsoccr), dropped by its lock',
  'moved-hold': 'checkpoint + restore (libsoccr), held in front of its lock',
};

const median = (v) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
const f = (v) => v.toFixed(v >= 100 ? 0 : 1);

async function main() {
  const freezes = (process.argv[2] ?? '100,300,700').split(',').map(Number);
  const rounds = Number(process.argv[3] ?? 5);
  const rows = [];
  for (const freeze of freezes) {
    const results = { drop: [], hold: [], 'moved-drop': [], 'moved-hold': [] };
    const modes = Object.keys(results);
    for (let i = 0; i < rounds; i++)
      for (const mode of i % 2 ? [...modes].reverse() : modes) results[mode].push(await round(mode, freeze));
    for (const mode of modes) {
      const r = results[mode];
      rows.push(
        `| ${freeze} | ${TITLES[mode]} | ${f(median(r.map((x) => x.afterUnlock)))} | ${f(Math.max(...r.map((x) => x.afterUnlock)))} | ${f(median(r.map((x) => x.stall)))} |`,
      );
    }
  }
  console.log('## A peer after a freeze: packets dropped vs held');
  console.log('');
  console.log(
    `machine: ${os.cpus().length} x ${os.cpus()[0]?.model ?? 'cpu'}, kernel ${os.release()}, node ${process.version}; date ${new Date().toISOString()}; load ${os.loadavg()[0].toFixed(1)}`,
  );
  console.log(`one loopback connection, ${rounds} rounds per row (the four ways alternating); times in ms`);
  console.log('');
  console.log('| freeze | peer packets | after unlock (median) | after unlock (max) | peer stall (median) |');
  console.log('| --- | --- | --- | --- | --- |');
  for (const row of rows) console.log(row);
}

main().catch((error) => {
  try {
    execFileSync('nft', ['delete', 'table', 'ip', 'bench_drop'], { stdio: 'ignore' });
  } catch {
    // not there
  }
  console.error(`bench failed: ${error.stack ?? error}`);
  process.exitCode = 1;
});
