/**
 * examples/http-keepalive runs as its README says (`node examples/http-keepalive/demo.js`, as
 * root), in a network namespace of its own: the demo itself checks every response and each
 * connection's request count across the two servers, and exits non-zero otherwise. Nothing stays
 * behind in the namespace (no nftables table, no process). The demo runs both sides with
 * http-keepalive/server.js as it is (the README's recipe).
 */
import { spawn } from 'node:child_process';
import * as path from 'node:path';

import { NetnsLab } from '../helpers/netns';

const DEMO = path.join(__dirname, '..', '..', 'examples', 'http-keepalive', 'demo.js');
const lab = new NetnsLab();

afterAll(() => lab.destroy());

it('node examples/http-keepalive/demo.js: every response right, counts go on, exit 0', async () => {
  const ns = lab.add('ex');
  lab.ip(ns, ['link', 'set', 'lo', 'up']);
  const child = spawn('nsenter', [`--net=${lab.path(ns)}`, '--', process.execPath, DEMO], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  expect({ code, output }).toMatchObject({
    code: 0,
    output: expect.stringMatching(
      /took over \d+ connections[^]*responses from 2 servers, 0 failed, per-connection counts went on/,
    ),
  });
  expect(lab.exec(ns, 'nft', ['list', 'tables']).trim()).toBe('');
  expect(lab.exec(ns, 'ss', ['-Htn', 'state', 'listening']).trim()).toBe('');
}, 120000);
