#!/usr/bin/env node
'use strict';
/**
 * README.md "Live migration and the CLI", its first block run as it is by bash: the lines between
 * README:begin and README:end are the README's (test/readme checks that they match). They run in
 * a scratch project that has node-criu installed as a dependency (node_modules/node-criu is this
 * checkout), so `npx node-criu` is the installed CLI, as it is for a user; $PID is an echo server
 * with a client talking to it, and the client's connection must survive the dump and restore.
 * As root, in a private network namespace.
 *
 *   sudo node examples/readme-cli.js
 */
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const { killQuietly, startEchoClient, startEchoServer } = require('./lib/echo');
const { inPrivateNetns } = require('./lib/private-netns');

const README_BLOCK = String.raw`
# README:begin
npx node-criu check --install                         # root? CRIU 4.2+ (installed if missing)? kernel checks?
npx node-criu dump --pid "$PID" --images-dir ./ckpt   # TCP connections included; the process is killed
npx node-criu restore --images-dir ./ckpt             # the same process again, its connections live
# README:end
`;

/** A project that depends on node-criu, as `npm install node-criu` leaves it (without the download). */
function scratchProject(dir) {
  const root = path.join(__dirname, '..');
  fs.mkdirSync(path.join(dir, 'node_modules', '.bin'), { recursive: true });
  fs.symlinkSync(root, path.join(dir, 'node_modules', 'node-criu'));
  const bin = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).bin['node-criu'];
  fs.symlinkSync(path.join('..', 'node-criu', bin), path.join(dir, 'node_modules', '.bin', 'node-criu'));
  const manifest = { name: 'app', version: '1.0.0', private: true, dependencies: { 'node-criu': `file:${root}` } };
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify(manifest));
}

async function main() {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'node-criu-readme-cli-'));
  let pid;
  try {
    scratchProject(work);
    pid = await startEchoServer(7002, path.join(work, 'ready'));
    const client = await startEchoClient(7002);
    await client.echoes(20);
    const run = spawnSync('bash', ['-euo', 'pipefail', '-c', README_BLOCK], {
      cwd: work,
      env: { ...process.env, PID: String(pid) },
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    if (run.status !== 0) throw new Error(`the README's commands failed (exit ${run.status})`);
    return await client.finish('the dump and restore');
  } finally {
    killQuietly(pid);
    fs.rmSync(work, { recursive: true, force: true });
  }
}

inPrivateNetns(main);
