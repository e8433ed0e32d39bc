#!/usr/bin/env node
'use strict';
/**
 * A WebSocket chat server (`ws`) that upgrades itself in place without dropping anyone: on SIGUSR2
 * it starts its successor (this file again, `--successor`, with one end of a SEQPACKET pair as fd
 * 3), waits until it is ready, and hands every chat client over with node-criu/ws, between frames, each with its name and
 * counters; the successor takes them into its own WebSocketServer, listens on the port, and the
 * old process exits. No client sees a close, a reconnect or a lost message.
 *
 *   node examples/ws-chat/server.js [port]         (as root; default port 8080)
 *   kill -USR2 <pid>                               (the pid it prints: hand over to a successor)
 *
 * Chat protocol: a client sends text; everyone (sender included) gets JSON
 * { from, n, text }, where n counts the sender's messages.
 */
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');

const { WebSocketServer } = require('ws');
const { SeqpacketTransport } = require('node-criu');
const { acceptWebSocketHandover, handOverWebSockets } = require('node-criu/ws');

const successor = process.argv.includes('--successor');
const port = Number(process.argv.find((a) => /^\d+$/.test(a)) ?? 8080);
const say = (line) => console.log(`[${process.pid}] ${line}`);

const httpServer = http.createServer((req, res) => res.writeHead(426).end('WebSocket only\n'));
const wss = new WebSocketServer({ server: httpServer });
/** Per-connection state: the part of the application that moves with each client. */
const users = new Map();
let nextGuest = 1;

function join(ws, user) {
  users.set(ws, user);
  ws.on('message', (data) => {
    user.sent += 1;
    const line = JSON.stringify({ from: user.name, n: user.sent, text: String(data) });
    for (const client of wss.clients) if (client.readyState === client.OPEN) client.send(line);
  });
  ws.on('close', () => users.delete(ws));
}

// README:begin
wss.on('connection', (ws, req, handover) => {
  if (handover?.handedOver) {
    // A client of our predecessor: its state came along, nothing to announce.
    join(ws, JSON.parse(handover.state));
  } else {
    const name = new URL(req.url, 'http://chat').searchParams.get('name') ?? `guest-${nextGuest++}`;
    join(ws, { name, sent: 0 });
  }
});

async function handOverToSuccessor() {
  const { transport, peerFd } = SeqpacketTransport.pair('handover');
  const next = spawn(process.execPath, [__filename, String(port), '--successor'], {
    stdio: ['ignore', 'inherit', 'inherit', peerFd, 'ipc'],
  });
  fs.closeSync(peerFd);
  // The clients pause from the first stop until the successor has them: start it first.
  await new Promise((resolve, reject) => next.once('message', resolve).once('exit', reject));
  next.disconnect();
  next.unref();
  // Stop accepting; the successor listens once it has everyone.
  httpServer.close();
  const result = await handOverWebSockets(wss, {
    to: transport,
    method: 'fd',
    serializeState: (ws) => Buffer.from(JSON.stringify(users.get(ws))),
    onResumed: (ws) => say(`kept ${users.get(ws).name} (the successor did not take it)`),
  });
  say(`handed over ${result.handedOver} clients in ${result.phases.total.toFixed(1)} ms; exiting`);
  process.exit(0);
}

async function main() {
  if (successor) {
    const accepted = acceptWebSocketHandover(wss, { from: new SeqpacketTransport(3, 'handover') });
    process.send('ready');
    const result = await accepted;
    say(`took over ${result.accepted} clients`);
  }
  await new Promise((resolve) => httpServer.listen(port, '127.0.0.1', resolve));
  say(`chat on ws://127.0.0.1:${port} (kill -USR2 ${process.pid} hands it over)`);
  process.once('SIGUSR2', () => handOverToSuccessor().catch((e) => say(`handover failed: ${e.code} ${e.message}`)));
}
// README:end

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
