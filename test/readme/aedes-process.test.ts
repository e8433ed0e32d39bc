/**
 * examples/aedes-process runs as the README says (`node examples/aedes-process/run.js`): an aedes
 * broker moved by the process route while mqtt.js clients publish QoS 1; every message arrives
 * once and in order, no client connection closes, and the example removes what it made.
 */
import { execFileSync, spawn } from 'node:child_process';
import * as path from 'node:path';

const RUN = path.join(__dirname, '..', '..', 'examples', 'aedes-process', 'run.js');

interface Report {
  ok: boolean;
  sent: number[];
  received: number[];
  duplicates: number[];
  outOfOrder: number[];
  closes: string[];
}

it('moves the broker with 10 publishers and a subscriber: every message once, in order, no reconnect', async () => {
  const child = spawn(process.execPath, [RUN, '10', '20'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  expect({ code, stderr }).toEqual({ code: 0, stderr: '' });
  const line = stdout.split('\n').find((l) => l.startsWith('RESULT '));
  const report = JSON.parse((line as string).slice('RESULT '.length)) as Report;
  expect(report.ok).toBe(true);
  expect(report.sent).toHaveLength(10);
  for (const [n, sent] of report.sent.entries()) {
    expect(sent).toBeGreaterThan(0);
    expect(report.received[n]).toBe(sent);
  }
  expect(report.duplicates.every((d) => d === 0) && report.outOfOrder.every((o) => o === 0)).toBe(true);
  expect(report.closes).toEqual([]);
  expect(stdout).toMatch(/ok {3}broker runs in host T/);
  // Its namespaces are gone.
  expect(execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })).not.toContain(`aedes-${child.pid}-`);
}, 180000);
