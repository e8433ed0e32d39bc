#!/usr/bin/env node
'use strict';
/**
 * An aedes MQTT broker moved to another "host" by the process route while mqtt.js clients
 * publish QoS 1 messages through it, and not one of them notices.
 *
 *   sudo node examples/aedes-process/run.js [publishers] [intervalMs]     (defaults: 20, 20)
 *
 * As root (CRIU). It makes its own network namespaces: hosts S and T and clients C on a bridge,
 * the broker's address 10.77.0.100 on S. The broker (broker.js, plain aedes) runs in S; the
 * clients (clients.js: one subscriber, N publishers) in C. Once messages flow, migrateProcess()
 * dumps the broker with CRIU, moves its address to T and restores it there, connections and all;
 * then the publishers stop and the subscriber's tally is checked: every message delivered once,
 * in order, and no client connection closed. Everything it made is removed at the end, also on
 * Ctrl-C. Exit code 0 when every check passed.
 */
const { execFileSync, spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');

const PUBLISHERS = Number(process.argv[2] ?? 20);
const INTERVAL_MS = Number(process.argv[3] ?? 20);
const SERVICE = '10.77.0.100';
const PORT = 1883;
const tag = `aedes-${process.pid}`;
const ns = { br: `${tag}-br`, s: `${tag}-s`, t: `${tag}-t`, c: `${tag}-c` };
const nsPath = (name) => `/run/netns/${name}`;
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'node-criu-aedes-'));
const made = [];
let broker;
let clients;

const ip = (netns, ...args) => execFileSync('ip', ['-n', netns, ...args], { stdio: 'pipe' });

function makeHosts() {
  for (const name of Object.values(ns)) {
    execFileSync('ip', ['netns', 'add', name]);
    made.push(name);
    ip(name, 'link', 'set', 'lo', 'up');
  }
  ip(ns.br, 'link', 'add', 'br0', 'type', 'bridge');
  ip(ns.br, 'link', 'set', 'br0', 'up');
  for (const [host, n] of [
    [ns.s, 2],
    [ns.t, 3],
    [ns.c, 9],
  ]) {
    ip(ns.br, 'link', 'add', `p${n}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', host);
    ip(ns.br, 'link', 'set', `p${n}`, 'master', 'br0', 'up');
    ip(host, 'addr', 'add', `10.77.0.${n}/24`, 'dev', 'eth0');
    ip(host, 'link', 'set', 'eth0', 'up');
  }
  ip(ns.s, 'addr', 'add', `${SERVICE}/24`, 'dev', 'eth0');
}

/** `node script ...args` inside network namespace `name` (nsenter execs node: the pid is node's). */
function nodeIn(name, script, args, stdio) {
  return spawn('nsenter', [`--net=${nsPath(name)}`, '--', process.execPath, path.join(__dirname, script), ...args], {
    stdio,
    detached: stdio === 'ignore',
    // libuv's io_uring rings are something CRIU 4.2 cannot dump.
    env: { ...process.env, UV_USE_IO_URING: '0' },
  });
}

async function waitForFile(file) {
  for (let i = 0; i < 600 && !fs.existsSync(file); i++) await new Promise((resolve) => setTimeout(resolve, 50));
  if (!fs.existsSync(file)) throw new Error(`the broker did not start (no ${file})`);
}

function cleanup() {
  for (const child of [clients, broker]) {
    try {
      if (child?.pid) process.kill(child.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  for (const name of made.splice(0)) execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore' });
  fs.rmSync(work, { recursive: true, force: true });
}

async function main() {
  for (const name of ['aedes', 'mqtt']) {
    try {
      require.resolve(name);
    } catch {
      throw new Error(`${name} is not installed: it is a devDependency of node-criu (npm install in the checkout)`);
    }
  }
  makeHosts();
  const ready = path.join(work, 'broker-ready');
  broker = nodeIn(ns.s, 'broker.js', [SERVICE, String(PORT), ready], 'ignore');
  await waitForFile(ready);
  console.log(`aedes broker: pid ${broker.pid} on ${SERVICE}:${PORT} in host S`);

  const config = { url: `mqtt://${SERVICE}:${PORT}`, publishers: PUBLISHERS, intervalMs: INTERVAL_MS };
  clients = nodeIn(ns.c, 'clients.js', [JSON.stringify(config)], ['pipe', 'pipe', 'inherit']);
  const lines = readline.createInterface({ input: clients.stdout })[Symbol.asyncIterator]();
  const next = async () => {
    const { value, done } = await lines.next();
    if (done) throw new Error('the clients exited early');
    return value;
  };
  if ((await next()) !== 'flowing') throw new Error('unexpected output from the clients');
  console.log(`${PUBLISHERS} mqtt.js publishers and a subscriber, QoS 1 every ${INTERVAL_MS} ms: flowing`);

  const [source, target] = [nsPath(ns.s), nsPath(ns.t)];
  const imagesDir = path.join(work, 'images');
  const pid = broker.pid;
  // README:begin
  const { addAddress, migrateProcess, removeAddress } = require('node-criu');

  const cidr = '10.77.0.100/24'; // the broker's address: on eth0 of the source, then of the target
  const result = await migrateProcess({
    pid, // the broker: plain aedes, nothing in it knows about node-criu
    source: { netns: source }, // network namespaces (/run/netns/NAME); left out: ours
    target: { netns: target },
    imagesDir,
    moveAddress: async () => {
      await removeAddress({ cidr, device: 'eth0', netns: source });
      await addAddress({ cidr, device: 'eth0', netns: target }); // and a gratuitous ARP
    },
    moveAddressBack: async () => {
      // only if a step after the dump fails: the broker is restored on the source
      await removeAddress({ cidr, device: 'eth0', netns: target }).catch(() => undefined);
      await addAddress({ cidr, device: 'eth0', netns: source });
    },
  });
  // README:end
  console.log(
    `broker moved to host T as pid ${result.restoredPid}: clients waited ${Math.round(result.downtimeMs)} ms`,
  );

  // Let the restored broker carry traffic for a while, then stop and count.
  await new Promise((resolve) => setTimeout(resolve, 1000));
  clients.stdin.write('stop\n');
  const report = JSON.parse(await next());
  const total = (list) => list.reduce((a, b) => a + b, 0);
  console.log(`messages published and acknowledged (PUBACK): ${total(report.sent)}`);
  const onT = fs.statSync(`/proc/${result.restoredPid}/ns/net`).ino === fs.statSync(nsPath(ns.t)).ino;
  const checks = [
    ['broker runs in host T', true, onT],
    ['messages delivered to the subscriber', total(report.sent), total(report.received)],
    ['duplicates', 0, total(report.duplicates)],
    ['out of order or missing', 0, total(report.outOfOrder)],
    ['client connections closed (reconnects needed)', 0, report.closes.length],
  ];
  let ok = true;
  for (const [what, expected, actual] of checks) {
    const pass = expected === actual;
    ok &&= pass;
    console.log(`${pass ? 'ok  ' : 'FAIL'} ${what}: ${actual}${pass ? '' : ` (expected ${expected})`}`);
  }
  console.log(ok ? 'every message delivered once, in order; no client reconnected' : 'FAILED');
  console.log(
    `RESULT ${JSON.stringify({ ok, restoredPid: result.restoredPid, downtimeMs: result.downtimeMs, ...report })}`,
  );
  return ok ? 0 : 1;
}

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    cleanup();
    process.exit(130);
  });
}

main()
  .then((code) => {
    process.exitCode = code;
  })
  .catch((error) => {
    console.error(error);
    process.exitCode = 1;
  })
  .finally(cleanup);
