#!/usr/bin/env node
'use strict';
/**
 * README.md "CRIU-RPC client", run as it is: the block between README:begin and README:end is the
 * README's (test/readme checks that they match). An echo server (a process of its own) is dumped
 * with its TCP connection while a client talks to it, then restored; the client's connection
 * carries on. As root, in a private network namespace (CRIU's nftables lock stays inside it).
 *
 *   sudo node examples/readme-criu.js
 */
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const { killQuietly, startEchoClient, startEchoServer } = require('./lib/echo');
const { inPrivateNetns } = require('./lib/private-netns');

async function readmeExample(pid, signal) {
  // README:begin
  const { Criu } = require('node-criu');

  const criu = new Criu(); // spawns `criu swrk` per call; { mode: 'service', address } for `criu service`
  console.log(await criu.version()); // { major: 4, minor: 2, sublevel: 1, text: '4.2.1', ... }

  const imagesDir = `/var/tmp/ckpt-${pid}`; // created (mode 0700) if missing
  await criu.dump(
    { pid, imagesDir, tcpEstablished: true, networkLock: 'nftables', leaveRunning: false },
    { 'post-dump': async () => console.log('dumped; the process is frozen, its connections locked') },
    { timeoutMs: 60_000, signal },
  );
  const { pid: restoredPid } = await criu.restore({ imagesDir, tcpEstablished: true });
  await criu.close();
  // README:end
  return restoredPid;
}

async function main() {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'node-criu-readme-'));
  let pid;
  try {
    pid = await startEchoServer(7001, path.join(work, 'ready'), { child: true });
    const client = await startEchoClient(7001);
    await client.echoes(20);
    await readmeExample(pid, AbortSignal.timeout(120_000));
    return await client.finish(`the dump and restore of echo server ${pid}`);
  } finally {
    killQuietly(pid);
    fs.rmSync(work, { recursive: true, force: true });
    if (pid !== undefined) fs.rmSync(`/var/tmp/ckpt-${pid}`, { recursive: true, force: true });
  }
}

inPrivateNetns(main);
