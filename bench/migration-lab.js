'use strict';
/**
 * The one-machine migration lab the process-route benchmarks share: namespaces b (a bridge), s
 * (source, .2), t (target, .3) and c (clients, .9) named `<prefix>-<h>` on `<subnet>.0/24`, the
 * service address `<subnet>.100` moved between s and t, detached node processes inside a
 * namespace (killed by killAll), and status files to wait on.
 */
const { execFileSync, spawn } = require('node:child_process');
const fs = require('node:fs');

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

module.exports = function migrationLab({ prefix, subnet }) {
  const VIP = `${subnet}.100`;
  const ns = (h) => `${prefix}-${h}`;
  const nsPath = (h) => `/run/netns/${ns(h)}`;
  const ip = (h, args) => execFileSync('ip', ['-n', ns(h), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const pids = new Set();

  function setup() {
    for (const h of ['b', 's', 't', 'c']) {
      execFileSync('ip', ['netns', 'add', ns(h)]);
      ip(h, ['link', 'set', 'lo', 'up']);
    }
    ip('b', ['link', 'add', 'br0', 'type', 'bridge']);
    ip('b', ['link', 'set', 'br0', 'up']);
    for (const [h, n] of [
      ['s', 2],
      ['t', 3],
      ['c', 9],
    ]) {
      ip('b', ['link', 'add', `p${n}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns(h)]);
      ip('b', ['link', 'set', `p${n}`, 'master', 'br0', 'up']);
      ip(h, ['addr', 'add', `${subnet}.${n}/24`, 'dev', 'eth0']);
      ip(h, ['link', 'set', 'eth0', 'up']);
    }
  }

  function teardown() {
    for (const h of ['c', 't', 's', 'b']) {
      try {
        execFileSync('ip', ['netns', 'delete', ns(h)], { stdio: 'ignore' });
      } catch {
        // gone
      }
    }
  }

  /** The service address onto `h` (off the other of s and t); the clients' neighbour entry flushed. */
  function vipOn(h) {
    for (const other of ['s', 't']) {
      try {
        ip(other, ['addr', 'del', `${VIP}/24`, 'dev', 'eth0']);
      } catch {
        // not there
      }
    }
    ip(h, ['addr', 'add', `${VIP}/24`, 'dev', 'eth0']);
    ip('c', ['neigh', 'flush', 'dev', 'eth0']);
  }

  function spawnNode(h, script, config) {
    const child = spawn('nsenter', [`--net=${nsPath(h)}`, '--', process.execPath, script, JSON.stringify(config)], {
      detached: true,
      stdio: 'ignore',
      env: { ...process.env, UV_USE_IO_URING: '0' },
    });
    child.on('error', () => undefined);
    pids.add(child.pid);
    return child.pid;
  }

  function killAll() {
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    pids.clear();
  }

  async function waitFile(file, timeoutMs = 120000) {
    const deadline = Date.now() + timeoutMs;
    while (!fs.existsSync(file)) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${file}`);
      await sleep(20);
    }
    return fs.readFileSync(file, 'utf8');
  }

  return { VIP, ns, nsPath, ip, pids, setup, teardown, vipOn, spawnNode, killAll, waitFile, sleep };
};
