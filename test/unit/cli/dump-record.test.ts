/** node-criu-dump.json, the note `dump` leaves beside the images for `restore` (lib/cli/dump-record.ts). */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import {
  checkOriginal,
  DUMP_RECORD,
  originalRunning,
  readDumpRecord,
  writeDumpRecord,
} from '../../../lib/cli/dump-record';
import { procStat } from '../../../lib/sys/proc';

describe('dump record', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ncr-record-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  const self = (): { pid: number; startTime: string } => ({
    pid: process.pid,
    startTime: (procStat(process.pid) as { startTime: string }).startTime,
  });

  it('round-trips, mode 0600; a running original is told from a later process with its pid', () => {
    const record = { ...self(), leftRunning: true, tcpEstablished: true };
    writeDumpRecord(dir, record);
    expect(fs.statSync(path.join(dir, DUMP_RECORD)).mode & 0o777).toBe(0o600);
    expect(readDumpRecord(dir)).toEqual(record);
    expect(originalRunning(record)).toBe(true);
    expect(originalRunning({ ...record, startTime: `${record.startTime}1` })).toBe(false);
  });

  it.each([
    ['not JSON', '{'],
    ['null', 'null'],
    [
      'a pid that is not a positive integer',
      JSON.stringify({ pid: 0, startTime: '1', leftRunning: true, tcpEstablished: true }),
    ],
    ['a missing field', JSON.stringify({ pid: 5, startTime: '1', leftRunning: true })],
    ['a wrong type', JSON.stringify({ pid: 5, startTime: 1, leftRunning: true, tcpEstablished: true })],
  ])('ignores a note with %s', (_what, text) => {
    fs.writeFileSync(path.join(dir, DUMP_RECORD), text);
    expect(readDumpRecord(dir)).toBeUndefined();
  });

  it('checkOriginal: refuses (exit 8) while a --leave-running original with connections runs, else lets the restore go', async () => {
    expect(await checkOriginal(dir)).toBeUndefined(); // no note
    writeDumpRecord(dir, { ...self(), leftRunning: true, tcpEstablished: true });
    await expect(checkOriginal(dir)).rejects.toMatchObject({ code: 'ERR_ORIGINAL_RUNNING', exitCode: 8 });
    writeDumpRecord(dir, { ...self(), leftRunning: true, tcpEstablished: false });
    expect(await checkOriginal(dir)).toBeUndefined();
    writeDumpRecord(dir, { ...self(), startTime: '1', leftRunning: true, tcpEstablished: true });
    expect(await checkOriginal(dir)).toMatch(/stale|reset the restored ones/);
  });
});
