/**
 * examples/ws-chat runs as its header says (`node examples/ws-chat/run.js`): chat users keep
 * talking while the server hands them to its successor, every line heard by everyone once and in
 * order, no disconnect. The example checks that itself and exits non-zero otherwise. run.js runs
 * ws-chat/server.js as it is (the README's recipe) on both sides.
 */
import { spawn } from 'node:child_process';
import * as path from 'node:path';

const RUN = path.join(__dirname, '..', '..', 'examples', 'ws-chat', 'run.js');

it('examples/ws-chat/run.js hands the chat over with no user noticing', async () => {
  const child = spawn(process.execPath, [RUN, '4', '20'], {
    env: { ...process.env, PORT: '18181' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  expect({ code, output }).toMatchObject({ code: 0 });
  expect(output).toMatch(/took over 4 clients/);
  expect(output).toMatch(/OK: 4 users said \d+ lines, each heard by every user once and in order, no disconnect/);
}, 120_000);
