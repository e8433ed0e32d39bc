'use strict';
// Runs both sides: server.js, keep-alive clients sending requests all the time, a new server.js
// that takes over, and the old one handing over and exiting. Every response must be a 200 and
// each connection's request count must go on (1, 2, 3, ... across the two servers).
//   node examples/http-keepalive/demo.js      (as root; takes a few seconds)
const { spawn } = require('node:child_process');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');

const port = Number(process.env.PORT || 8080);
const env = {
  ...process.env,
  PORT: String(port),
  HANDOVER_SOCKET: path.join(os.tmpdir(), `http-keepalive-${process.pid}.sock`),
};
const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
const seen = { responses: 0, failures: 0, servers: new Set(), countsGoOn: true };
const lastCount = new WeakMap();

function start(args) {
  const child = spawn(process.execPath, [path.join(__dirname, 'server.js'), ...args], {
    env,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  child.output = '';
  child.stdout.setEncoding('utf8').on('data', (text) => {
    child.output += text;
    process.stdout.write(text);
  });
  return child;
}

async function says(child, what) {
  while (!child.output.includes(what)) await new Promise((resolve) => setTimeout(resolve, 20));
}

function request() {
  return new Promise((resolve) => {
    const req = http.get({ port, agent }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (chunk) => (body += chunk));
      res.on('end', () => {
        const [, pid, n] = /from (\d+), request (\d+)/.exec(body) || [];
        if (res.statusCode !== 200 || !pid) seen.failures++;
        if (Number(n) !== (lastCount.get(req.socket) || 0) + 1) seen.countsGoOn = false;
        lastCount.set(req.socket, Number(n));
        seen.servers.add(pid);
        seen.responses++;
        resolve();
      });
    });
    req.on('error', () => {
      seen.failures++;
      resolve();
    });
  });
}

async function clients(until) {
  const loop = async () => {
    while (!until()) await request();
  };
  await Promise.all(Array.from({ length: 8 }, loop));
}

async function main() {
  const old = start([]);
  await says(old, 'listening');
  let done = false;
  const load = clients(() => done);
  const successor = start(['--successor-of', env.HANDOVER_SOCKET]);
  await says(successor, 'waiting for the running server');
  old.kill('SIGUSR2');
  await new Promise((resolve) => old.once('exit', resolve));
  await says(successor, 'took over');
  const before = seen.responses;
  while (seen.responses < before + 1000) await new Promise((resolve) => setTimeout(resolve, 50));
  done = true;
  await load;
  agent.destroy();
  successor.kill();
  console.log(
    `${seen.responses} responses from ${seen.servers.size} servers, ${seen.failures} failed, ` +
      `per-connection counts ${seen.countsGoOn ? 'went on' : 'broke'}`,
  );
  process.exitCode = seen.failures === 0 && seen.countsGoOn && seen.servers.size === 2 ? 0 : 1;
}

main();
