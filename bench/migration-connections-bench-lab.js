'use strict';
/**
 * The parts of bench/migration-connections-bench.js around a row: its lab (DemoLab namespaces,
 * removed also on failure, SIGINT and SIGTERM), the node processes inside it driven over IPC, the
 * client fleet, and the address move of the handover.
 */
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const dist = process.env.NODE_CRIU_BENCH_DIST || path.join(__dirname, '..', 'dist');
const { DEMO_PREFIX, DEVICE, DemoLab, SERVICE_IP } = require(path.join(dist, 'demo', 'lab'));
const { nsenterArgs } = require(path.join(dist, 'sys', 'netns'));
const { announceAddress } = require(path.join(dist, 'sys', 'address'));
const { run } = require(path.join(dist, 'sys', 'exec'));

/** The listener's backlog, and the SYN backlog of the server namespace (only there): a burst of 10,000 SYNs fits. */
const BACKLOG = 16384;

/** `node script config` inside a lab namespace, with an IPC channel: request() and events. */
function spawnIn(lab, host, script, config) {
  const child = spawn('nsenter', nsenterArgs(lab.path(host), process.execPath, [script, JSON.stringify(config)]), {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  let next = 1;
  const pending = new Map();
  const waiters = [];
  child.on('message', (msg) => {
    if (msg.id !== undefined) {
      const entry = pending.get(msg.id);
      pending.delete(msg.id);
      if (entry && msg.error) entry.reject(new Error(msg.error));
      else if (entry) entry.resolve(msg);
      return;
    }
    for (const w of waiters.filter((x) => x.event === msg.event)) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve(msg);
    }
    if (child.onEvent) child.onEvent(msg);
  });
  // One exit handler answers every request still pending (not one handler per request: the
  // byte totals are polled many times per row).
  let exited;
  child.once('exit', (code, signal) => {
    exited = code ?? signal;
    for (const [id, entry] of pending) {
      pending.delete(id);
      entry.reject(new Error(`${path.basename(script)} exited (${exited}) before answering ${entry.cmd}`));
    }
  });
  child.request = (body) =>
    new Promise((resolve, reject) => {
      if (exited !== undefined) {
        reject(new Error(`${path.basename(script)} exited (${exited}) before answering ${body.cmd}`));
        return;
      }
      const id = next++;
      pending.set(id, { resolve, reject, cmd: body.cmd });
      child.send({ ...body, id }, (error) => error && reject(error));
    });
  child.next = (event) => new Promise((resolve) => waiters.push({ event, resolve }));
  return child;
}

/** The clients, split over processes of `perProcess` connections in namespace C. */
class ClientFleet {
  constructor(lab, count, { perProcess, pace, port }) {
    this.procs = [];
    this.counts = [];
    this.pace = pace;
    this.port = port;
    for (let left = count; left > 0; left -= perProcess) {
      this.procs.push(spawnIn(lab, 'c', path.join(__dirname, 'migration-connections-clients.js'), {}));
      this.counts.push(Math.min(perProcess, left));
    }
  }
  all(body) {
    return Promise.all(this.procs.map((p) => p.request(body)));
  }
  async connect(reconnect) {
    await Promise.all(
      this.procs.map((p, i) =>
        p.request({
          cmd: 'connect',
          host: SERVICE_IP,
          port: this.port,
          count: this.counts[i],
          reconnect,
          ...this.pace,
        }),
      ),
    );
  }
  /** Each connection's longest gap between two arrivals since the last reset. */
  async resetGaps() {
    return (await this.all({ cmd: 'resetGaps' })).flatMap((r) => r.gaps);
  }
  /** Byte totals over every client: cheap to poll, unlike the reports. */
  async totals() {
    const all = await this.all({ cmd: 'summary' });
    return {
      sentBytes: all.reduce((sum, s) => sum + s.sentBytes, 0),
      receivedBytes: all.reduce((sum, s) => sum + s.receivedBytes, 0),
    };
  }
  async reports() {
    return (await this.all({ cmd: 'report' })).flatMap((r) => r.reports);
  }
  /** TcpExt counters of namespace C (all client processes share it). */
  netstat() {
    const lines = fs.readFileSync(`/proc/${this.procs[0].pid}/net/netstat`, 'utf8').split('\n');
    const header = lines.find((l) => l.startsWith('TcpExt:')).split(/\s+/);
    const values = lines.filter((l) => l.startsWith('TcpExt:'))[1].split(/\s+/);
    const get = (name) => Number(values[header.indexOf(name)]);
    return { timeouts: get('TCPTimeouts'), lossProbes: get('TCPLossProbes') };
  }
}

/**
 * `ip -force -batch -` kept running in one namespace: each command runs without a process start
 * (what an address move costs otherwise is mostly starting `ip` under load). A bad command after
 * each real one marks its end: ip reports it on stderr (unbuffered) once the real one is done.
 */
class IpBatch {
  constructor(lab, host) {
    this.child = spawn('ip', ['-n', lab.name(host), '-force', '-batch', '-'], { stdio: ['pipe', 'ignore', 'pipe'] });
    this.waiting = [];
    let text = '';
    this.child.stderr.on('data', (chunk) => {
      text += chunk;
      for (let end = text.indexOf('\n'); end >= 0; end = text.indexOf('\n')) {
        const line = text.slice(0, end);
        text = text.slice(end + 1);
        const head = this.waiting[0];
        if (!head) continue;
        if (line.includes('ncrbench-marker')) this.waiting.shift().done();
        else head.errors.push(line);
      }
    });
  }
  run(command) {
    return new Promise((resolve, reject) => {
      const errors = [];
      this.waiting.push({ errors, done: () => (errors.length ? reject(new Error(errors.join('; '))) : resolve()) });
      this.child.stdin.write(`${command}\nncrbench-marker\n`);
    });
  }
  close() {
    this.child.stdin.end();
  }
}

/**
 * The handover's moveAddress hook: the service address leaves one host and arrives at the other
 * (announced by gratuitous ARP) at the same time. While both have it, the clients' packets go
 * wherever their neighbour cache says; either way they are dropped (the originals' filters on A,
 * the gap lock on B) until the restore.
 */
async function moveVip(lab, shells, to) {
  const from = to === 'a' ? 'b' : 'a';
  const cidr = `${SERVICE_IP}/32`;
  await Promise.all([
    shells[from].run(`addr del ${cidr} dev ${DEVICE}`).catch(() => undefined),
    shells[to].run(`addr add ${cidr} dev ${DEVICE}`),
  ]);
  await announceAddress({ address: SERVICE_IP, device: DEVICE, netns: lab.path(to), count: 1 });
  lab.vipOn = to;
}

/** Labs alive now, and whether a signal is taking everything down. */
const labs = new Set();
let stopping = false;

/** Every namespace (with its processes) and work directory of this process's labs, also one half set up. */
async function sweepOwnLabs() {
  const prefix = `${DEMO_PREFIX}-${process.pid}-`;
  const names = (await run('ip', ['netns', 'list'])).stdout
    .split('\n')
    .map((line) => line.split(' ')[0])
    .filter((name) => name.startsWith(prefix));
  for (const name of names) {
    const pids = (await run('ip', ['netns', 'pids', name]).catch(() => ({ stdout: '' }))).stdout;
    for (const pid of pids.split('\n').filter(Boolean)) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        // gone already
      }
    }
    await run('ip', ['netns', 'delete', name]).catch(() => undefined);
  }
  for (const entry of fs.readdirSync(os.tmpdir()))
    if (entry.startsWith(prefix)) fs.rmSync(path.join(os.tmpdir(), entry), { recursive: true, force: true });
}

const cleanup = (lab) => lab.killProcesses().then(() => lab.destroy());

/** SIGINT/SIGTERM: no new lab starts; the live ones (and anything half made) go, then the signal takes its course. */
function onSignal(signal) {
  if (stopping) return;
  stopping = true;
  void Promise.allSettled([...labs].map(cleanup))
    .then(sweepOwnLabs)
    .finally(() => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      process.kill(process.pid, signal);
    });
}
process.on('SIGINT', onSignal);
process.on('SIGTERM', onSignal);

/** Runs fn(lab) in a new lab whose server namespace A takes BACKLOG SYNs; removes the lab whatever happens. */
async function inLab(fn) {
  if (stopping) throw new Error('interrupted');
  const lab = new DemoLab();
  labs.add(lab);
  try {
    await lab.setup();
    const sysctls = [`net.core.somaxconn=${BACKLOG}`, `net.ipv4.tcp_max_syn_backlog=${BACKLOG}`];
    await run('sysctl', ['-q', '-w', ...sysctls], { netns: lab.path('a'), timeoutMs: 30000 });
    return await fn(lab);
  } finally {
    labs.delete(lab);
    await cleanup(lab);
  }
}

module.exports = { BACKLOG, ClientFleet, IpBatch, inLab, moveVip, spawnIn };
