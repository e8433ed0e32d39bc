/** Which CRIU log line a CriuRequestError leads with (lib/criu/log-errors.ts, lib/criu/replies.ts). */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { criuErrorLines, isHarmlessCriuLine, mostRelevantCriuError } from '../../../lib/criu/log-errors';
import { CriuReqType } from '../../../lib/criu/messages';
import { requestFailure } from '../../../lib/criu/replies';

/** The whole log of CRIU 4.2.1 dumping a pid that does not exist (swrk, this project's machine). */
const ESRCH_LOG = fs.readFileSync(path.join(__dirname, 'criu-dump-esrch.log'), 'utf8');
const RLIMIT = "Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted\n";

describe('mostRelevantCriuError', () => {
  it("names the missing process for a dump of a pid that does not exist, not CRIU's first (RLIMIT_NOFILE) error", () => {
    expect(isHarmlessCriuLine(RLIMIT)).toBe(true);
    expect(criuErrorLines(ESRCH_LOG)).toEqual([
      'Error (compel/src/lib/infect.c:417): Unable to detach from 999999: No such process',
    ]);
    expect(mostRelevantCriuError({ log: ESRCH_LOG, crErrno: 3, crErrmsg: RLIMIT })).toBe(
      'Error (compel/src/lib/infect.c:417): Unable to detach from 999999: No such process',
    );
  });

  it('takes the first real error when none names the errno, skipping the FAILED summary', () => {
    const log = [
      "(00.08) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted",
      "(00.09)  123: Error (soccr/soccr.c:529): Can't connect inet socket back: Cannot assign requested address",
      '(00.09)  123: Error (criu/files.c:1213): Unable to open fd=3 id=0x6',
      '(00.10) Error (criu/cr-restore.c:2331): Restoring FAILED.',
    ].join('\n');
    expect(mostRelevantCriuError({ log, crErrmsg: RLIMIT })).toBe(
      "123: Error (soccr/soccr.c:529): Can't connect inet socket back: Cannot assign requested address",
    );
    // errno 99 (EADDRNOTAVAIL) is named by the first line: the same choice by the errno rule.
    expect(mostRelevantCriuError({ log, crErrno: 99 })).toMatch(/Can't connect inet socket back/);
  });

  it('falls back to cr_errmsg unless it is a harmless line, and to nothing', () => {
    expect(mostRelevantCriuError({ crErrmsg: 'Error (x.c:1): bad thing\n' })).toBe('Error (x.c:1): bad thing');
    expect(mostRelevantCriuError({ crErrmsg: RLIMIT })).toBeUndefined();
    expect(mostRelevantCriuError({ log: '(00.1) Error (criu/cr-dump.c:1975): Dumping FAILED.' })).toBeUndefined();
    expect(mostRelevantCriuError({})).toBeUndefined();
  });
});

describe('requestFailure message', () => {
  it("leads with the log line that explains the failure; crErrmsg and logTail keep CRIU's own text", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ncr-log-'));
    try {
      const logPath = path.join(dir, 'criu-dump.log');
      fs.writeFileSync(logPath, ESRCH_LOG);
      const error = requestFailure(
        { type: CriuReqType.DUMP },
        { type: CriuReqType.DUMP, success: false, crErrno: 3, crErrmsg: RLIMIT },
        logPath,
      );
      expect(error.message).toBe(
        `CRIU DUMP failed: Error (compel/src/lib/infect.c:417): Unable to detach from 999999: No such process; errno 3, ESRCH; log: ${logPath}`,
      );
      expect(error).toMatchObject({ code: 'ESRCH', crErrmsg: RLIMIT, logFile: logPath });
      expect(error.logTail).toContain('Dumping FAILED.');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
