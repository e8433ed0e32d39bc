/**
 * The fuzzers' reproductions, kept as regression checks: each script exits 0 when the bug it
 * reproduces is fixed and 1 when it is back (they use the built package in dist/).
 */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

const scripts = ['untyped-errors.js', 'restore-pending-read.js', 'restore-unlock-eperm.js'];

describe('fuzzer reproductions', () => {
  it.each(scripts)('%s passes', (script) => {
    const result = spawnSync(process.execPath, [path.join(__dirname, 'repro', script)], {
      encoding: 'utf8',
      timeout: 60000,
    });
    if (result.status !== 0) throw new Error(`${script} exited ${result.status}:\n${result.stdout}\n${result.stderr}`);
    expect(result.status).toBe(0);
  });
});
