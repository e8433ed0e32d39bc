#!/usr/bin/env node
'use strict';
/**
 * The whole ws-chat demo in one command: the chat server (server.js) with chat users (users.js)
 * talking, then `kill -USR2` makes the server hand every user to its successor process, the users
 * go on talking, a late user joins the successor, and the users' tallies are checked: every line
 * heard by everyone once and in order, no connection closed.
 *
 *   sudo node examples/ws-chat/run.js [users] [intervalMs]        (defaults: 5, 20; about 10 s)
 *
 * Runs on 127.0.0.1, port 18080 or the PORT environment variable. Exit code 0 when every check
 * passed. Stops whatever it started on exit, also on Ctrl-C.
 */
const { spawn } = require('node:child_process');
const path = require('node:path');
const readline = require('node:readline');

const USERS = Number(process.argv[2] ?? 5);
const INTERVAL_MS = Number(process.argv[3] ?? 20);
const PORT = Number(process.env.PORT ?? 18080);
const url = `ws://127.0.0.1:${PORT}`;
const pids = new Set();

/** Runs a node script; returns the child and an async iterator of its stdout lines. */
function start(script, args) {
  const child = spawn(process.execPath, [path.join(__dirname, script), ...args], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  pids.add(child.pid);
  const lines = readline.createInterface({ input: child.stdout });
  const seen = [];
  const waiters = [];
  lines.on('line', (line) => {
    console.log(`  ${script}: ${line}`);
    seen.push(line);
    for (const w of [...waiters]) {
      if (!w.test(line)) continue;
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve(line);
    }
  });
  const waitFor = (pattern, timeoutMs = 30000) => {
    const found = seen.find((l) => pattern.test(l));
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${script}: no ${pattern} within ${timeoutMs} ms`)), timeoutMs);
      waiters.push({ test: (l) => pattern.test(l), resolve: (l) => (clearTimeout(timer), resolve(l)) });
    });
  };
  return { child, waitFor };
}

function stopAll() {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone already
    }
  }
}

async function main() {
  const server = start('server.js', [String(PORT)]);
  await server.waitFor(/chat on/);
  const users = start('users.js', [url, String(USERS), String(INTERVAL_MS)]);
  await users.waitFor(/^flowing$/);

  console.log(`handing the chat over to a successor (kill -USR2 ${server.child.pid})`);
  process.kill(server.child.pid, 'SIGUSR2');
  const took = await server.waitFor(/took over (\d+) clients/);
  const successorPid = Number(/^\[(\d+)\]/.exec(took)[1]);
  pids.add(successorPid);
  await server.waitFor(/handed over \d+ clients/);
  await server.waitFor(new RegExp(`\\[${successorPid}\\] chat on`));

  // Talking goes on with the successor, and it accepts newcomers.
  const late = start('users.js', [url, '1', String(INTERVAL_MS), 'late']);
  await late.waitFor(/^talking$/);
  await new Promise((resolve) => setTimeout(resolve, 1000));
  late.child.stdin.end('stop\n');
  users.child.stdin.end('stop\n');
  const report = JSON.parse(await users.waitFor(/^\{/));

  const tookCount = Number(/took over (\d+)/.exec(took)[1]);
  const problems = [];
  if (tookCount !== USERS) problems.push(`the successor took ${tookCount} of ${USERS} users`);
  if (!report.heardAll) problems.push('not every line was heard by everyone');
  for (const u of report.users) {
    if (u.wrong > 0) problems.push(`${u.name} heard ${u.wrong} lines out of order or twice`);
    if (u.closedBeforeEnd || u.errors.length > 0) problems.push(`${u.name} was disconnected: ${u.errors.join(', ')}`);
  }
  const said = report.users.reduce((sum, u) => sum + u.said, 0);
  if (problems.length > 0) {
    console.log(`FAILED:\n  ${problems.join('\n  ')}`);
    process.exitCode = 1;
  } else {
    console.log(`OK: ${USERS} users said ${said} lines, each heard by every user once and in order, no disconnect`);
  }
}

process.once('SIGINT', () => {
  stopAll();
  process.exit(130);
});
process.once('SIGTERM', () => {
  stopAll();
  process.exit(143);
});
main()
  .catch((error) => {
    console.log(`FAILED: ${error.message}`);
    process.exitCode = 1;
  })
  .finally(stopAll);
