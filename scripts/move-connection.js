#!/usr/bin/env node
'use strict';
/**
 * node-criu example: move a live TCP connection from one socket to another while data flows both
 * ways, and check that nothing was lost, duplicated or reset.
 *
 *   npm run build && sudo npm run example      (root: TCP_REPAIR needs CAP_NET_ADMIN; npm runs it
 *   in a private network namespace, so its nftables lock never touches the host's firewall)
 *
 * A client and a server talk over loopback, each streaming 8 MB to the other. Midway, the
 * server's socket is checkpointed (the connection's packets are held by an nftables rule, the
 * socket is closed without FIN or RST), the image is encoded to bytes (what you would write to
 * disk or send to another process), decoded, and restored into a brand-new socket that carries
 * on. At the end both sides compare byte counts and SHA-256 of everything sent and received.
 */
const crypto = require('node:crypto');
const net = require('node:net');
const path = require('node:path');

const nodeCriu = require(path.join(__dirname, '..', 'dist'));

const TOTAL = 8 * 1024 * 1024;
const CHUNK = 64 * 1024;

/** Streams TOTAL random bytes into whatever socket it is attached to; hashes both directions. */
class Side {
  constructor(name) {
    this.name = name;
    this.sent = 0;
    this.received = 0;
    this.sentHash = crypto.createHash('sha256');
    this.receivedHash = crypto.createHash('sha256');
    this.resets = 0;
    this.socket = null;
    this.onData = (data) => {
      this.received += data.length;
      this.receivedHash.update(data);
    };
    this.onDrain = () => this.pump();
    this.onError = (error) => {
      if (['ECONNRESET', 'EPIPE'].includes(error.code)) this.resets++;
      console.error(`${this.name}: ${error.code || error.message}`);
    };
  }

  attach(socket) {
    this.socket = socket;
    socket.on('data', this.onData);
    socket.on('drain', this.onDrain);
    socket.on('error', this.onError);
    socket.resume();
    setImmediate(() => this.pump());
  }

  detach() {
    const socket = this.socket;
    socket.pause();
    socket.off('data', this.onData);
    socket.off('drain', this.onDrain);
    this.socket = null;
    return socket;
  }

  pump() {
    const socket = this.socket;
    while (socket && this.socket === socket && this.sent < TOTAL) {
      const chunk = crypto.randomBytes(Math.min(CHUNK, TOTAL - this.sent));
      this.sent += chunk.length;
      this.sentHash.update(chunk);
      if (!socket.write(chunk)) return;
    }
  }
}

function until(predicate, what, timeoutMs = 60000) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const timer = setInterval(() => {
      if (predicate()) {
        clearInterval(timer);
        resolve();
      } else if (Date.now() - started > timeoutMs) {
        clearInterval(timer);
        reject(new Error(`timed out waiting for ${what}`));
      }
    }, 5);
  });
}

async function main() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const accepted = new Promise((resolve) => server.once('connection', resolve));
  const clientSocket = net.connect(server.address().port, '127.0.0.1');
  const serverSocket = await accepted;
  server.close(); // one connection is all we need

  const client = new Side('client');
  const serverSide = new Side('server');
  client.attach(clientSocket);
  serverSide.attach(serverSocket);
  const lock = await nodeCriu.NftablesLock.create();
  let restored = null;
  try {
    await until(() => client.received > TOTAL / 4 && serverSide.received > TOTAL / 4, 'traffic');
    console.log(`streaming: client got ${client.received} B, server got ${serverSide.received} B so far`);

    const original = serverSide.detach();
    const image = await nodeCriu.checkpointConnection(original, { lock });
    const bytes = nodeCriu.encodeConnectionImage(image);
    console.log(
      `checkpointed ${image.local.address}:${image.local.port} <-> ${image.remote.address}:${image.remote.port}` +
        ` (${image.skData.stateName}): image ${bytes.length} B, receive queue ${image.recvQueue.length} B,` +
        ` send queue ${image.sendQueue.length} B (${image.sendQueueUnsent} B never sent), Node read buffer ${image.pendingRead.length} B;` +
        ` original closed silently: ${original.destroyed}`,
    );

    restored = await nodeCriu.restoreConnection(nodeCriu.decodeConnectionImage(bytes));
    console.log(`restored into a new socket (${restored.localAddress}:${restored.localPort}); traffic continues`);
    serverSide.attach(restored);

    await until(() => client.received === TOTAL && serverSide.received === TOTAL, 'all bytes');
    await new Promise((resolve) => setTimeout(resolve, 100)); // a late reset would show up here

    const checks = [
      ['client -> server bytes', client.sent, serverSide.received],
      ['server -> client bytes', serverSide.sent, client.received],
      ['client -> server sha256', client.sentHash.digest('hex'), serverSide.receivedHash.digest('hex')],
      ['server -> client sha256', serverSide.sentHash.digest('hex'), client.receivedHash.digest('hex')],
      ['resets seen (client, server)', 0, client.resets + serverSide.resets],
    ];
    let ok = true;
    for (const [what, expected, actual] of checks) {
      const pass = expected === actual;
      ok &&= pass;
      console.log(`${pass ? 'ok  ' : 'FAIL'} ${what}: ${actual}${pass ? '' : ` (expected ${expected})`}`);
    }
    console.log(ok ? 'connection moved: every byte arrived exactly once, no reset' : 'connection move FAILED');
    process.exitCode = ok ? 0 : 1;
  } finally {
    clientSocket.destroy();
    if (restored) restored.destroy();
    await lock.destroy();
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
