/**
 * Protocol cases the real CRIU cannot produce on demand (or not on this kernel), against a
 * scripted swrk (test/fixtures/criu-fake-swrk.js) over the real SOCK_SEQPACKET socket: the
 * PRE_DUMP loop's requests, notify acks with an SCM_RIGHTS fd and `external`, malformed and
 * unexpected replies, large replies, hanging handlers. Beside, not instead of, the real-CRIU suites.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { Criu, CriuReqType, type CriuRequestMessage } from '../../lib';
import { FIXTURES, childrenOf, makeTempDir, removeDir } from './helpers';
import { newFds, openFds } from '../helpers/fds';

type Step =
  { recv: true } | { send: Record<string, unknown>; passFd?: string } | { sendRaw: string } | { exit: number };

describe('Criu client protocol handling (scripted swrk over a real socket)', () => {
  let dir: string;
  let counter = 0;
  beforeEach(() => {
    dir = makeTempDir('proto');
  });
  afterEach(() => removeDir(dir));

  /** A Criu whose "criu" runs `steps`; log() returns the requests it received. */
  function scripted(steps: Step[]): { criu: Criu; log: () => { req: CriuRequestMessage; fds: number }[] } {
    const id = counter++;
    const logFile = path.join(dir, `requests-${id}.jsonl`);
    const scenario = path.join(dir, `scenario-${id}.json`);
    fs.writeFileSync(scenario, JSON.stringify({ log: logFile, steps }));
    const wrapper = path.join(dir, `fake-criu-${id}`);
    fs.writeFileSync(
      wrapper,
      `#!/bin/sh\nexec ${process.execPath} ${path.join(FIXTURES, 'criu-fake-swrk.js')} ${scenario} "$@"\n`,
      { mode: 0o755 },
    );
    return {
      criu: new Criu({ criuPath: wrapper }),
      log: () =>
        fs.existsSync(logFile)
          ? fs
              .readFileSync(logFile, 'utf8')
              .trim()
              .split('\n')
              .map((line) => JSON.parse(line))
          : [],
    };
  }

  it('preDump: PRE_DUMP per iteration on one connection with fresh dirs and parent_img, then DUMP', async () => {
    const { criu, log } = scripted([
      { recv: true },
      { send: { type: CriuReqType.PRE_DUMP, success: true } },
      { recv: true },
      { send: { type: CriuReqType.PRE_DUMP, success: true } },
      { recv: true },
      { send: { type: CriuReqType.DUMP, success: true, dump: { restored: false } } },
    ]);
    const fds = openFds();
    const seen: number[] = [];
    const result = await criu.preDump({
      imagesDir: dir,
      pid: 4242,
      tcpEstablished: true,
      leaveRunning: true,
      shouldContinue: (iteration) => {
        seen.push(iteration.iteration);
        return iteration.iteration < 2;
      },
    });
    expect(seen).toEqual([1, 2]);
    expect(result.imagesDir).toBe(path.join(dir, 'dump'));
    expect(result.iterations.map((i) => i.imagesDir)).toEqual([path.join(dir, 'pre-1'), path.join(dir, 'pre-2')]);
    const requests = log().map((entry) => entry.req);
    expect(requests.map((r) => r.type)).toEqual([CriuReqType.PRE_DUMP, CriuReqType.PRE_DUMP, CriuReqType.DUMP]);
    expect(requests.map((r) => r.opts?.parentImg)).toEqual([undefined, '../pre-1', '../pre-2']);
    expect(requests.map((r) => r.opts?.logFile)).toEqual(['criu-pre-dump.log', 'criu-pre-dump.log', 'criu-dump.log']);
    // leave_running belongs to the final DUMP only; every request names the pid.
    expect(requests.map((r) => r.opts?.leaveRunning)).toEqual([undefined, undefined, true]);
    expect(
      requests.every((r) => r.opts?.pid === 4242 && r.opts.tcpEstablished === true && r.opts.imagesDirFd >= 0),
    ).toBe(true);
    expect(newFds(fds)).toEqual([]);
    expect(childrenOf(process.pid)).toEqual([]);
  });

  it('notifications: the orphan-pts-master fd reaches the handler, query-ext-files sends external, unknown scripts are acked', async () => {
    const passed = path.join(dir, 'pts-stand-in');
    fs.writeFileSync(passed, 'fd content');
    const { criu, log } = scripted([
      { recv: true },
      { send: { type: CriuReqType.NOTIFY, success: true, notify: { script: 'orphan-pts-master' } }, passFd: passed },
      { recv: true },
      { send: { type: CriuReqType.NOTIFY, success: true, notify: { script: 'query-ext-files' } } },
      { recv: true },
      { send: { type: CriuReqType.NOTIFY, success: true, notify: { script: 'from-the-future', pid: 9 } } },
      { recv: true },
      { send: { type: CriuReqType.RESTORE, success: true, restore: { pid: 777 } } },
    ]);
    const fds = openFds();
    let content = '';
    const result = await criu.restore(
      { imagesDir: dir },
      {
        'orphan-pts-master': (event) => {
          const buffer = Buffer.alloc(64);
          content = buffer.subarray(0, fs.readSync(event.fd as number, buffer, 0, 64, 0)).toString();
        },
        'query-ext-files': () => ({ external: ['file[123:456]'] }),
      },
    );
    expect(result.pid).toBe(777);
    expect(content).toBe('fd content');
    expect(result.notifications).toEqual([
      { script: 'orphan-pts-master' },
      { script: 'query-ext-files' },
      { script: 'from-the-future', pid: 9 },
    ]);
    const requests = log().map((entry) => entry.req);
    expect(requests[0]).toMatchObject({ type: CriuReqType.RESTORE, opts: { notifyScripts: true } });
    expect(requests.slice(1)).toEqual([
      { type: CriuReqType.NOTIFY, notifySuccess: true },
      { type: CriuReqType.NOTIFY, notifySuccess: true, opts: { imagesDirFd: -1, external: ['file[123:456]'] } },
      { type: CriuReqType.NOTIFY, notifySuccess: true },
    ]);
    // The passed fd was closed after its handler settled.
    expect(newFds(fds)).toEqual([]);
  });

  it('a rejecting handler acks failure; the call rejects with ERR_CRIU_NOTIFY_HANDLER', async () => {
    const { criu, log } = scripted([
      { recv: true },
      { send: { type: CriuReqType.NOTIFY, success: true, notify: { script: 'pre-dump' } } },
      { recv: true },
      { send: { type: CriuReqType.DUMP, success: false, crErrmsg: 'RPC client reported script error' } },
    ]);
    const cause = new Error('not now');
    await expect(
      criu.dump({ imagesDir: dir, pid: 1 }, { 'pre-dump': async () => Promise.reject(cause) }),
    ).rejects.toMatchObject({
      code: 'ERR_CRIU_NOTIFY_HANDLER',
      script: 'pre-dump',
      cause,
    });
    expect(log()[1].req).toEqual({ type: CriuReqType.NOTIFY, notifySuccess: false });
    expect(childrenOf(process.pid)).toEqual([]);
  });

  it('inheritFds and ps.fd become swrk fds 4, 5, ... and their numbers go into inherit_fd / ps.fd', async () => {
    const { criu, log } = scripted([
      { recv: true },
      { send: { type: CriuReqType.RESTORE, success: true, restore: { pid: 55 } } },
    ]);
    const first = path.join(dir, 'first');
    const second = path.join(dir, 'second');
    const pages = path.join(dir, 'pages');
    const fds = [first, second, pages].map((file) => fs.openSync(file, 'w'));
    try {
      await criu.restore({
        imagesDir: dir,
        inheritFds: [
          { key: 'file[1:2]', fd: fds[0] },
          { key: 'file[3:4]', fd: fds[1] },
        ],
        ps: { fd: fds[2] },
      });
      const [entry] = log();
      expect(entry.req.opts?.inheritFd).toEqual([
        { key: 'file[1:2]', fd: 4 },
        { key: 'file[3:4]', fd: 5 },
      ]);
      expect(entry.req.opts?.ps).toEqual({ fd: 6 });
      // (fds 7+ are the fake's own node internals)
      expect((entry as unknown as { extra: Record<string, string> }).extra).toMatchObject({
        4: first,
        5: second,
        6: pages,
      });
    } finally {
      fds.forEach((fd) => fs.closeSync(fd));
    }
  });

  it('malformed, unexpected and EMPTY replies are typed errors and leave nothing behind', async () => {
    const fds = openFds();
    const garbage = scripted([{ recv: true }, { sendRaw: 'ffffffffff' }]);
    await expect(garbage.criu.version()).rejects.toMatchObject({
      name: 'CriuProtocolError',
      code: 'ERR_CRIU_PROTOCOL',
    });
    const wrongType = scripted([{ recv: true }, { send: { type: CriuReqType.DUMP, success: true } }]);
    await expect(wrongType.criu.check()).rejects.toMatchObject({
      name: 'CriuProtocolError',
      code: 'ERR_CRIU_PROTOCOL',
    });
    const empty = scripted([{ recv: true }, { send: { type: CriuReqType.EMPTY, success: false } }]);
    await expect(empty.criu.cpuinfoCheck({ imagesDir: dir })).rejects.toMatchObject({
      name: 'CriuRequestError',
      code: 'ERR_CRIU_UNSUPPORTED',
      requestType: 'CPUINFO_CHECK',
      responseType: 'EMPTY',
    });
    const silent = scripted([{ recv: true }, { exit: 255 }]);
    await expect(silent.criu.dump({ imagesDir: dir, pid: 1 })).rejects.toMatchObject({
      code: 'ERR_CRIU_EXITED',
      exitCode: 255,
    });
    expect(newFds(fds)).toEqual([]);
    expect(childrenOf(process.pid)).toEqual([]);
  });

  it('a reply larger than any fixed buffer arrives whole', async () => {
    const errmsg = 'x'.repeat(150 * 1024);
    const { criu } = scripted([
      { recv: true },
      { send: { type: CriuReqType.DUMP, success: false, crErrno: 3, crErrmsg: errmsg } },
    ]);
    const error = await criu.dump({ imagesDir: dir, pid: 1 }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'ESRCH', crErrno: 3 });
    expect((error as { crErrmsg: string }).crErrmsg).toBe(errmsg);
  });

  it('a handler that never settles is ended by timeoutMs: swrk killed and reaped, handler signal aborted', async () => {
    const { criu } = scripted([
      { recv: true },
      { send: { type: CriuReqType.NOTIFY, success: true, notify: { script: 'post-dump' } } },
      { recv: true },
    ]);
    const fds = openFds();
    let handlerSignal: AbortSignal | undefined;
    const error = await criu
      .dump(
        { imagesDir: dir, pid: 1 },
        {
          'post-dump': (event) =>
            new Promise<void>((resolve) => {
              handlerSignal = event.signal;
              event.signal.addEventListener('abort', () => resolve());
            }),
        },
        { timeoutMs: 5000 },
      ) // long enough for the scripted swrk (a node process) to start under load
      .catch((e: unknown) => e);
    expect(error).toMatchObject({ name: 'CriuTimeoutError', code: 'ERR_CRIU_TIMEOUT' });
    expect(handlerSignal).toBeDefined(); // the timeout ended the handler, not the start-up
    expect(handlerSignal?.aborted).toBe(true);
    expect(childrenOf(process.pid)).toEqual([]);
    expect(newFds(fds)).toEqual([]);
  });
});
