#!/usr/bin/env node
'use strict';
/**
 * Chat users (`ws` clients) for server.js: each says a numbered line every `intervalMs`; each
 * checks that it hears every user's lines once and in order (from the first it hears). On `stop` (a line on stdin) they stop
 * talking, wait until every line said was heard everywhere, close, and print one JSON report.
 *
 *   node examples/ws-chat/users.js [url] [users] [intervalMs] [namePrefix]
 *   (defaults: ws://127.0.0.1:8080 5 20 user)
 */
const readline = require('node:readline');

const { WebSocket } = require('ws');

const url = process.argv[2] ?? 'ws://127.0.0.1:8080';
const count = Number(process.argv[3] ?? 5);
const intervalMs = Number(process.argv[4] ?? 20);
const prefix = process.argv[5] ?? 'user';

function user(i) {
  const name = `${prefix}-${i}`;
  const ws = new WebSocket(`${url}/?name=${name}`);
  const state = { name, said: 0, heard: {}, wrong: 0, closed: false, errors: [] };
  ws.on('message', (data) => {
    const { from, n, text } = JSON.parse(data);
    // A user who joined late starts hearing someone mid-way: from there on, every line in order.
    const last = state.heard[from] ?? n - 1;
    if (n !== last + 1 || text !== `${from} line ${n}`) state.wrong += 1;
    state.heard[from] = Math.max(last, n);
  });
  ws.on('close', () => (state.closed = true));
  ws.on('error', (error) => state.errors.push(error.message));
  return new Promise((resolve, reject) => {
    ws.once('error', reject).once('open', () => {
      state.timer = setInterval(() => ws.send(`${name} line ${++state.said}`), intervalMs);
      resolve({ ws, state });
    });
  });
}

async function main() {
  const users = await Promise.all(Array.from({ length: count }, (_, i) => user(i)));
  console.log('talking');
  // "flowing" once every user heard everyone.
  const flowing = setInterval(() => {
    if (users.every((u) => Object.keys(u.state.heard).length === count)) {
      clearInterval(flowing);
      console.log('flowing');
    }
  }, 20);
  for await (const line of readline.createInterface({ input: process.stdin })) if (line === 'stop') break;
  users.forEach((u) => clearInterval(u.state.timer));
  const heardAll = () =>
    users.every((u) => users.every((other) => (u.state.heard[other.state.name] ?? 0) === other.state.said));
  for (let i = 0; i < 500 && !heardAll(); i++) await new Promise((r) => setTimeout(r, 20));
  const report = users.map(({ state }) => {
    const { timer: _timer, ...s } = state;
    return { ...s, closedBeforeEnd: s.closed };
  });
  users.forEach((u) => u.ws.close());
  console.log(JSON.stringify({ heardAll: heardAll(), users: report }));
  process.exit(0);
}

main().catch((error) => {
  console.error(error.message);
  process.exit(1);
});
