/**
 * Property test of the CRIU client end to end over a real SOCK_SEQPACKET socket: a scripted swrk
 * (test/fixtures/criu-fake-swrk.js) answers each call with random sequences of criu_resp
 * datagrams — valid ones, NOTIFY messages, mutated and random bytes — sometimes then exits.
 * version(), check() and dump() (with a notify handler) must settle with a result or a typed
 * error; afterwards no fd of ours is open and no child process is left.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import * as fc from 'fast-check';

import { Criu, CriuReqType, encodeResponse } from '../../lib/criu';
import { responseArb } from './arbitraries';
import { newFds, openFds } from '../criu/helpers';
import { count, mutatedBytes, printTally, runs, typedOutcomeAsync } from './fuzz-helpers';

const FAKE_SWRK = path.join(__dirname, '..', 'fixtures', 'criu-fake-swrk.js');

function children(): number[] {
  try {
    return fs
      .readFileSync(`/proc/${process.pid}/task/${process.pid}/children`, 'utf8')
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}

let dir = '';
let fdsAtStart = new Map<number, string>();
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ncr-fuzz-criu-'));
  fdsAtStart = openFds();
});
afterAll(() => {
  printTally('criu-client');
  fs.rmSync(dir, { recursive: true, force: true });
  // fds opened here and still open (an earlier suite's fd closing meanwhile is no leak).
  expect(newFds(fdsAtStart)).toEqual([]);
});

const validReply = (type: number) =>
  fc.oneof(
    responseArb.map((r) => ({ ...r, type: type as CriuReqType })),
    fc.constant({ type: type as CriuReqType, success: true, version: { majorNumber: 4, minorNumber: 2, sublevel: 1 } }),
  );
const notifyReply = fc
  .constantFrom('pre-dump', 'post-dump', 'network-lock', 'network-unlock', 'status-ready', 'bogus')
  .map((script) => ({
    type: CriuReqType.NOTIFY,
    success: true,
    notify: { script, pid: 1 },
  }));

/** 1..4 datagrams: NOTIFYs and final replies, each valid, mutated or random; maybe an exit. */
const scriptArb = fc.record({
  call: fc.constantFrom('version', 'check', 'dump'),
  replies: fc.array(
    fc.oneof(
      {
        weight: 3,
        arbitrary: mutatedBytes(
          fc
            .oneof(
              validReply(CriuReqType.VERSION),
              validReply(CriuReqType.CHECK),
              validReply(CriuReqType.DUMP),
              notifyReply,
            )
            .map((r) => new Uint8Array(encodeResponse(r))),
        ),
      },
      {
        weight: 2,
        arbitrary: fc
          .oneof(validReply(CriuReqType.VERSION), validReply(CriuReqType.DUMP), notifyReply)
          .map((r) => new Uint8Array(encodeResponse(r))),
      },
    ),
    { minLength: 1, maxLength: 4 },
  ),
  exitCode: fc.option(fc.constantFrom(0, 1, 139), { nil: undefined }),
});

it('version/check/dump against random replies: a result or a typed error, nothing left behind', async () => {
  let run = 0;
  await fc.assert(
    fc.asyncProperty(scriptArb, async (script) => {
      count('criu client: scripted reply sequences');
      const id = run++;
      const scenario = path.join(dir, `scenario-${id}.json`);
      const steps: unknown[] = [{ recv: true }];
      for (const reply of script.replies) steps.push({ sendRaw: Buffer.from(reply).toString('hex') }, { recv: true });
      if (script.exitCode !== undefined) steps.push({ exit: script.exitCode });
      fs.writeFileSync(scenario, JSON.stringify({ log: path.join(dir, `log-${id}.jsonl`), steps }));
      const wrapper = path.join(dir, `criu-${id}`);
      fs.writeFileSync(wrapper, `#!/bin/sh\nexec ${process.execPath} ${FAKE_SWRK} ${scenario} "$@"\n`, { mode: 0o755 });
      const imagesDir = path.join(dir, `images-${id}`);
      fs.mkdirSync(imagesDir);

      const criu = new Criu({ criuPath: wrapper });
      const call = { timeoutMs: 10_000 };
      const outcome = await typedOutcomeAsync<unknown>(() => {
        if (script.call === 'version') return criu.version(call);
        if (script.call === 'check') return criu.check(call);
        return criu.dump({ imagesDir, pid: 1, logFile: 'dump.log' }, { default: async () => undefined }, call);
      }, script);
      await criu.close();
      count(outcome.ok ? `criu client: ${script.call} resolved` : `criu client: ${script.call} ${outcome.error.code}`);
      expect(children()).toEqual([]);
    }),
    { numRuns: runs(60) },
  );
});
