/**
 * Broken conversations: a scripted swrk over the real SOCK_SEQPACKET socket
 * (test/fixtures/criu-fake-swrk.js, and criu-fault-empty-swrk.pl for what Node's addon refuses to
 * send) for bytes the real CRIU never produces, and a real `criu service` whose worker dies in the
 * middle of a dump. Each case: a typed error with a code, no child, no fd left. What
 * test/criu/client-protocol.test.ts already covers (garbage, wrong reply type, EMPTY, exit without
 * reply, a 150 KB reply, a hanging handler) is not repeated here.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { Criu, CriuReqType, encodeResponse } from '../../lib';
import { FIXTURES, childrenOf, killPid, makeTempDir, pidAlive, removeDir, sleep } from '../criu/helpers';
import { waitUntil } from '../helpers/wait';
import { FaultLab, TCP } from './criu-fault-lab';
import { type FdSnapshot, newFds, openFds } from '../helpers/fds';

type Step = { recv: true } | { send: Record<string, unknown> } | { sendRaw: string } | { exit: number };

/** Above pid_max (2^22): a dump target that cannot exist, so no real process is ever touched. */
const NO_SUCH_PID = 4194304 + 9;

function hex(message: Parameters<typeof encodeResponse>[0]): string {
  return Buffer.from(encodeResponse(message)).toString('hex');
}

describe('broken CRIU conversations (scripted swrk over a real socket)', () => {
  let dir: string;
  let counter = 0;
  let fds: FdSnapshot;
  beforeAll(() => {
    dir = makeTempDir('proto-faults');
  });
  afterAll(() => removeDir(dir));
  beforeEach(() => {
    fds = openFds();
  });
  afterEach(() => {
    // No swrk stand-in left running or unreaped, no fd left open.
    expect(childrenOf(process.pid)).toEqual([]);
    expect(newFds(fds)).toEqual([]);
  });

  function wrapper(command: string): Criu {
    const file = path.join(dir, `fake-criu-${counter++}`);
    fs.writeFileSync(file, `#!/bin/sh\nexec ${command} "$@"\n`, { mode: 0o755 });
    return new Criu({ criuPath: file });
  }

  function scripted(steps: Step[]): Criu {
    const scenario = path.join(dir, `scenario-${counter}.json`);
    fs.writeFileSync(scenario, JSON.stringify({ log: path.join(dir, `requests-${counter}.jsonl`), steps }));
    return wrapper(`${process.execPath} ${path.join(FIXTURES, 'criu-fake-swrk.js')} ${scenario}`);
  }

  const notify = (script: string): Step => ({ send: { type: CriuReqType.NOTIFY, success: true, notify: { script } } });

  it.each(['empty', 'shutdown'])(
    'a swrk whose socket ends without exiting (%s) is killed: ERR_CRIU_PROTOCOL',
    async (mode) => {
      const criu = wrapper(`${path.join(FIXTURES, 'criu-fault-empty-swrk.pl')} ${mode}`);
      await expect(criu.version()).rejects.toMatchObject({ name: 'CriuProtocolError', code: 'ERR_CRIU_PROTOCOL' });
    },
  );

  it('a reply cut short inside a field is ERR_CRIU_PROTOCOL; cut at a field boundary it is what those fields say', async () => {
    const reply = { type: CriuReqType.DUMP, success: false, crErrno: 3, crErrmsg: 'no such task' };
    const bytes = Buffer.from(encodeResponse(reply));
    // 08 01 | 10 00 | 38 03 | 4a 0c "no such task": cuts inside the errmsg, inside its length
    // prefix's field, and at two field boundaries.
    const cases: [number, Record<string, unknown>][] = [
      [bytes.length - 1, { name: 'CriuProtocolError', code: 'ERR_CRIU_PROTOCOL' }],
      [7, { name: 'CriuProtocolError', code: 'ERR_CRIU_PROTOCOL' }],
      [5, { name: 'CriuProtocolError', code: 'ERR_CRIU_PROTOCOL' }],
      [1, { name: 'CriuProtocolError', code: 'ERR_CRIU_PROTOCOL' }],
      // type only: the required `success` is missing.
      [2, { name: 'CriuProtocolError', code: 'ERR_CRIU_PROTOCOL' }],
      // type + success=false: a valid (if terse) failure.
      [4, { name: 'CriuRequestError', code: 'ERR_CRIU_REQUEST_FAILED' }],
    ];
    for (const [length, expected] of cases) {
      const criu = scripted([{ recv: true }, { sendRaw: bytes.subarray(0, length).toString('hex') }]);
      await expect(criu.dump({ imagesDir: dir, pid: NO_SUCH_PID })).rejects.toMatchObject(expected);
    }
  });

  it('garbage after a valid notify in the same message: rejected whole (ERR_CRIU_PROTOCOL), the handler never runs', async () => {
    const criu = scripted([
      { recv: true },
      { sendRaw: `${hex({ type: CriuReqType.NOTIFY, success: true, notify: { script: 'pre-dump' } })}ffffffffff` },
      { recv: true },
    ]);
    const ran: string[] = [];
    await expect(
      criu.dump({ imagesDir: dir, pid: NO_SUCH_PID }, { default: (event) => void ran.push(event.script) }),
    ).rejects.toMatchObject({
      name: 'CriuProtocolError',
      code: 'ERR_CRIU_PROTOCOL',
    });
    expect(ran).toEqual([]);
  });

  it('a garbage message after a valid, acknowledged notify: ERR_CRIU_PROTOCOL', async () => {
    const criu = scripted([
      { recv: true },
      notify('pre-dump'),
      { recv: true },
      { sendRaw: 'ffffffffff' },
      { recv: true },
    ]);
    const ran: string[] = [];
    await expect(
      criu.dump({ imagesDir: dir, pid: NO_SUCH_PID }, { default: (event) => void ran.push(event.script) }),
    ).rejects.toMatchObject({
      name: 'CriuProtocolError',
      code: 'ERR_CRIU_PROTOCOL',
    });
    expect(ran).toEqual(['pre-dump']);
  });

  it('swrk gone while a handler runs (closed mid-conversation): ERR_CRIU_EXITED with its exit status', async () => {
    const criu = scripted([{ recv: true }, notify('post-dump'), { exit: 7 }]);
    const error = await criu
      // A slow handler is the point: swrk exits while it runs.
      .dump({ imagesDir: dir, pid: NO_SUCH_PID }, { 'post-dump': () => sleep(300) })
      .catch((e: unknown) => e);
    expect(error).toMatchObject({ name: 'CriuConnectionError', code: 'ERR_CRIU_EXITED', exitCode: 7 });
  });

  it('a reply after a notify that was never acknowledged-to (out of order) still settles the call once', async () => {
    // The peer does not wait for the ack: NOTIFY then the final reply back to back.
    const criu = scripted([
      { recv: true },
      notify('pre-restore'),
      { send: { type: CriuReqType.RESTORE, success: true, restore: { pid: 77 } } },
      { recv: true },
    ]);
    // An async handler that takes a while: the reply waits for it.
    const result = await criu.restore({ imagesDir: dir }, { default: () => sleep(50) });
    expect(result.pid).toBe(77);
    expect(result.notifications).toEqual([{ script: 'pre-restore' }]);
  });
});

describe('a real criu service whose worker dies mid-dump (CRIU 4.2.1, streaming server)', () => {
  let lab: FaultLab;
  beforeAll(() => {
    lab = new FaultLab();
  });
  afterAll(async () => {
    await lab?.close();
  });

  it('worker killed at pre-dump: ERR_CRIU_DISCONNECTED, the server runs on, nothing lost, nothing left', async () => {
    const address = path.join(lab.dir, 'service.sock');
    const service = spawn(lab.netns.criuWrapper(lab.dir), ['service', '--address', address], { stdio: 'ignore' });
    service.on('error', () => undefined);
    try {
      for (let i = 0; i < 500 && !fs.existsSync(address); i++) await sleep(10);
      const criu = new Criu({ mode: 'service', address });
      const pair = await lab.startPair();
      const fds = openFds();
      const killed: number[] = [];
      const error = await criu
        .dump(
          { imagesDir: pair.images, pid: pair.serverPid, ...TCP },
          {
            'pre-dump': async () => {
              // The service forks one worker per connection: ours is its only child now.
              for (const worker of childrenOf(service.pid as number)) {
                process.kill(worker, 'SIGKILL');
                killed.push(worker);
              }
              // Answer only once the worker is dead (its socket closed with it) and the client's
              // loop has polled the hang-up: two turns of the loop hold a poll phase.
              await waitUntil(() => killed.every((worker) => !pidAlive(worker)), { what: `worker ${killed} to die` });
              for (let turn = 0; turn < 2; turn++) await new Promise((resolve) => setImmediate(resolve));
            },
          },
        )
        .catch((e: unknown) => e);
      expect(killed).toHaveLength(1);
      expect(error).toMatchObject({ name: 'CriuConnectionError', code: 'ERR_CRIU_DISCONNECTED' });
      await pair.expectExact();
      expect(lab.netns.nftTables()).not.toMatch(/CRIU/);
      expect(newFds(fds)).toEqual([]);
      await criu.close();
    } finally {
      await killPid(service.pid);
    }
  });
});
