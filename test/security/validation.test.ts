/**
 * Bad fds, paths, sizes and enums are refused in TypeScript before any native call: each entry
 * point that hands such a value to the addon (or to nft/CRIU) throws a typed error with a code,
 * and nothing was created (fd count unchanged, no child process, no socket in repair mode, no
 * socket in the namespace a truncated path would have named). No spies: the proofs are the
 * error, the unchanged process state, and positive controls showing the same call with a good
 * value does reach the kernel.
 */
/* eslint-disable no-sparse-arrays -- sparse arrays are the input under test */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

import {
  Criu,
  NftablesLock,
  SeqpacketTransport,
  restoreConnection,
  checkpointConnection,
  soccr,
  startCriuService,
} from '../../lib';
import type { ConnectionImage } from '../../lib';
import { newFds, openFds } from '../helpers/fds';

function childPids(): string[] {
  return fs
    .readdirSync('/proc/self/task')
    .flatMap((task) => fs.readFileSync(`/proc/self/task/${task}/children`, 'utf8').trim().split(/\s+/).filter(Boolean));
}

/** fn must throw (or reject with) a typed error with `code`, leaving fds and children as they were. */
async function expectRefused(fn: () => unknown, code: string | RegExp): Promise<void> {
  const fds = openFds();
  const children = childPids();
  let error: unknown;
  try {
    await fn();
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(Error);
  const typed = error as { code?: unknown; name?: string };
  expect(typeof typed.code).toBe('string');
  if (typeof code === 'string') expect(typed.code).toBe(code);
  else expect(typed.code).toMatch(code);
  expect(newFds(fds)).toEqual([]);
  expect(childPids()).toEqual(children);
}

const BAD_FDS: [unknown, string][] = [
  [-1, 'ERR_INVALID_ARG_TYPE'],
  [1.5, 'ERR_INVALID_ARG_TYPE'],
  [NaN, 'ERR_INVALID_ARG_TYPE'],
  ['3', 'ERR_INVALID_ARG_TYPE'],
  [2 ** 31, 'ERR_OUT_OF_RANGE'],
  [2 ** 32 + 3, 'ERR_OUT_OF_RANGE'],
];

describe('libsoccr half: bad values never reach the addon', () => {
  let server: net.Server;
  let client: net.Socket;
  let accepted: net.Socket;

  beforeAll(async () => {
    server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const connection = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
    client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    accepted = await connection;
  });

  afterAll(() => {
    client?.destroy();
    accepted?.destroy();
    server?.close();
  });

  it('fd arguments: negative, fractional, non-numbers and >= 2^31 are refused', async () => {
    for (const [fd, code] of BAD_FDS) {
      await expectRefused(
        () => soccr.pause(fd as number),
        code === 'ERR_OUT_OF_RANGE' ? /^ERR_(OUT_OF_RANGE|INVALID_ARG_TYPE)$/ : code,
      );
      await expectRefused(() => soccr.dumpFd(fd as number), /^ERR_(OUT_OF_RANGE|INVALID_ARG_TYPE)$/);
      await expectRefused(() => soccr.isInRepairMode(fd as number), /^ERR_(OUT_OF_RANGE|INVALID_ARG_TYPE)$/);
      await expectRefused(() => soccr.attachDropFilter(fd as number), /^ERR_(OUT_OF_RANGE|INVALID_ARG_TYPE)$/);
      await expectRefused(() => soccr.closeFd(fd as number), /^ERR_(OUT_OF_RANGE|INVALID_ARG_TYPE)$/);
      await expectRefused(() => soccr.adoptSocket(fd as number), /^ERR_(OUT_OF_RANGE|INVALID_ARG_TYPE)$/);
    }
    // (2^32 + 3 would be fd 3 after the addon's int32 conversion: a call on someone else's fd.)
    // Control: a real fd reaches the kernel.
    expect(soccr.isInRepairMode(accepted)).toBe(false);
  });

  it('family and netns of a new socket: only 4|6 and absolute NUL-free paths', async () => {
    await expectRefused(() => soccr.createTcpSocket(5 as 4), 'ERR_INVALID_ARG_VALUE');
    await expectRefused(() => soccr.pauseNewSocket(0 as 4), 'ERR_INVALID_ARG_VALUE');
    for (const netns of ['relative/ns', '', 42, `/${'n'.repeat(5000)}`]) {
      await expectRefused(() => soccr.createTcpSocket(4, { netns: netns as string }), /^ERR_/);
      await expectRefused(() => soccr.pauseNewSocket(4, netns as string), /^ERR_/);
    }
  });

  it('a netns path with a NUL byte is refused, never truncated to the namespace before the NUL', async () => {
    const name = `ncr-sec-${process.pid}-${Math.random().toString(16).slice(2, 8)}`;
    execFileSync('ip', ['netns', 'add', name]);
    try {
      const truncated = `/run/netns/${name}\0/anything`;
      await expectRefused(() => soccr.createTcpSocket(4, { netns: truncated }), 'ERR_INVALID_ARG_VALUE');
      await expectRefused(() => soccr.pauseNewSocket(4, truncated), 'ERR_INVALID_ARG_VALUE');
      await expectRefused(() => NftablesLock.create({ netns: truncated }), 'ERR_INVALID_ARG_VALUE');
      await expectRefused(() => checkpointConnection(accepted, { netns: truncated }), 'ERR_INVALID_ARG_VALUE');
      // Control: the path without the NUL does reach the namespace.
      const fd = soccr.createTcpSocket(4, { netns: `/run/netns/${name}` });
      soccr.closeFd(fd);
      expect(soccr.isInRepairMode(accepted)).toBe(false);
    } finally {
      execFileSync('ip', ['netns', 'del', name]);
    }
  });

  it('restore paths: restoreFd / restoreConnection options are checked before any socket exists', async () => {
    // A real dump to restore from (the connection is resumed right after).
    const handle = soccr.pause(accepted);
    const skData = handle.getSkData();
    const dump = {
      skData,
      local: handle.getLocalAddress(),
      remote: handle.getRemoteAddress(),
      recvQueue: handle.getQueueBytes('recv'),
      sendQueue: handle.getQueueBytes('send'),
    };
    handle.resume();
    const image: ConnectionImage = {
      version: 1,
      family: 4,
      local: dump.local,
      remote: dump.remote,
      skData,
      recvQueue: dump.recvQueue,
      sendQueue: dump.sendQueue,
      sendQueueUnsent: skData.unsqLen,
      pendingRead: Buffer.alloc(0),
    };
    for (const netns of ['/run/netns/x\0y', 'relative', 3]) {
      await expectRefused(() => soccr.restoreFd(dump, { netns: netns as string }), /^ERR_INVALID_ARG_(VALUE|TYPE)$/);
      await expectRefused(() => restoreConnection(image, { netns: netns as string }), /^ERR_INVALID_ARG_(VALUE|TYPE)$/);
    }
    // A sparse locks array: its hole must not reach the restore (it used to, as undefined).
    await expectRefused(
      () => restoreConnection(image, { locks: [,] as unknown as NftablesLock[] }),
      'ERR_INVALID_ARG_TYPE',
    );
    // An image whose lock names a netns with a NUL is invalid as a whole.
    await expectRefused(
      () => restoreConnection({ ...image, lock: { table: 'node_criu_x', netns: '/run/netns/a\0b' } }),
      'ERR_CONNECTION_IMAGE_INVALID',
    );
    expect(soccr.isInRepairMode(accepted)).toBe(false);
    const echoed = new Promise<string>((resolve) => accepted.once('data', (d: Buffer) => resolve(d.toString())));
    client.write('still-there');
    expect(await echoed).toBe('still-there');
  });

  it('nft lock references: only nftables identifiers reach an nft batch; enums exact', async () => {
    for (const table of ['x; delete table inet filter', 'a\nflush ruleset', '', '1abc', 'x'.repeat(65), 7]) {
      await expectRefused(() => NftablesLock.fromRef({ table: table as string }), /^ERR_INVALID_ARG_(VALUE|TYPE)$/);
    }
    await expectRefused(() => NftablesLock.fromRef({ table: 'node_criu_1', netns: 'rel' }), 'ERR_INVALID_ARG_VALUE');
    await expectRefused(
      () => checkpointConnection(accepted, { lock: 'NFTABLES' as 'nftables' }),
      'ERR_INVALID_ARG_VALUE',
    );
    await expectRefused(() => soccr.setLogger(() => undefined, 'verbose' as 'debug'), 'ERR_INVALID_ARG_VALUE');
    await expectRefused(() => soccr.setLogger('log' as never), 'ERR_INVALID_ARG_TYPE');
    const handle = soccr.pause(accepted);
    try {
      await expectRefused(() => handle.getQueueBytes('both' as 'recv'), 'ERR_INVALID_ARG_VALUE');
    } finally {
      handle.resume();
    }
  });
});

describe('CRIU half: socket paths, fds and message sizes', () => {
  let dir: string;

  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ncr-sec-val-'));
  });

  afterAll(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a service address with a NUL byte (an abstract socket in C) or over 107 bytes is refused', async () => {
    for (const address of ['\0criu-abstract', '/tmp/criu\0.sock', `/${'a'.repeat(107)}`]) {
      await expectRefused(() => new Criu({ mode: 'service', address }), /^ERR_(INVALID_ARG_VALUE|OUT_OF_RANGE)$/);
      await expectRefused(() => SeqpacketTransport.connect(address), /^(ERR_INVALID_ARG_VALUE|ENAMETOOLONG)$/);
      await expectRefused(() => startCriuService({ address }), /^ERR_(INVALID_ARG_VALUE|OUT_OF_RANGE)$/);
    }
    // A relative address short enough, but over 107 bytes once made absolute (what CRIU binds).
    const relative = 's'.repeat(107 - process.cwd().length);
    expect(Buffer.byteLength(relative)).toBeLessThanOrEqual(107);
    await expectRefused(() => startCriuService({ address: relative }), 'ERR_OUT_OF_RANGE');
    expect(fs.existsSync(relative)).toBe(false);
  });

  it('transport fds and sizes: bad fds, too many fds, empty or non-byte messages', async () => {
    for (const [fd] of BAD_FDS)
      await expectRefused(() => new SeqpacketTransport(fd as number), /^ERR_(OUT_OF_RANGE|INVALID_ARG_TYPE)$/);
    const { transport, peerFd } = SeqpacketTransport.pair('test');
    try {
      await expectRefused(() => transport.send(Buffer.alloc(0)), 'ERR_INVALID_ARG_VALUE');
      await expectRefused(() => transport.send('text' as unknown as Uint8Array), 'ERR_INVALID_ARG_TYPE');
      await expectRefused(() => transport.send(Buffer.from('x'), [-1]), 'ERR_OUT_OF_RANGE');
      await expectRefused(() => transport.send(Buffer.from('x'), [2 ** 31]), 'ERR_OUT_OF_RANGE');
      await expectRefused(() => transport.send(Buffer.from('x'), new Array(254).fill(0)), 'ERR_INVALID_ARG_TYPE');
      // Control: a good message with a good fd goes through.
      transport.send(Buffer.from('x'), [0]);
    } finally {
      transport.close();
      fs.closeSync(peerFd);
    }
  });

  it('startCriuService options: exact names, mode range, timeout; nothing is spawned', async () => {
    const address = path.join(dir, 'never.sock');
    await expectRefused(() => startCriuService(null as never), 'ERR_INVALID_ARG_TYPE');
    await expectRefused(() => startCriuService({ address, socketMode: 0o1777 }), 'ERR_OUT_OF_RANGE');
    await expectRefused(() => startCriuService({ address, socketMode: -1 }), 'ERR_OUT_OF_RANGE');
    await expectRefused(() => startCriuService({ address, socketMode: '600' as never }), 'ERR_INVALID_ARG_TYPE');
    await expectRefused(() => startCriuService({ address, timeoutMs: 0 }), 'ERR_OUT_OF_RANGE');
    await expectRefused(() => startCriuService({ address, criuPath: 'a\0b' }), 'ERR_INVALID_ARG_VALUE');
    await expectRefused(() => startCriuService({ address, listen: '0.0.0.0' } as never), 'ERR_INVALID_ARG_VALUE');
    expect(fs.existsSync(address)).toBe(false);
  });
});

describe('sparse arrays (holes) are checked like undefined elements', () => {
  // forEach/map/every skip the holes of [, x]: validation built on them let undefined through to
  // the encoder or the addon (found by test/fuzz/api-args with cgRoot/enableFs holes).
  it('CRIU options, encoder fields, transport fds and connection batches with holes are refused', async () => {
    const { toCriuOpts, validateCriuOptions } = await import('../../lib/criu/options');
    const { encodeRequest } = await import('../../lib/criu/codec');
    const { CriuReqType } = await import('../../lib/criu/messages');
    for (const options of [{ enableFs: ['proc', , 'sysfs'] }, { cgRoot: [{ path: '/a' }, ,] }, { external: [,] }]) {
      await expectRefused(() => validateCriuOptions(options as never), 'ERR_INVALID_ARG_TYPE');
      await expectRefused(() => toCriuOpts(options as never), 'ERR_INVALID_ARG_TYPE');
    }
    expect(
      encodeRequest({ type: CriuReqType.DUMP, opts: { imagesDirFd: 3, enableFs: ['a', 'b'] } }).length,
    ).toBeGreaterThan(0); // control
    await expectRefused(
      () => encodeRequest({ type: CriuReqType.DUMP, opts: { imagesDirFd: 3, enableFs: ['a', ,] } } as never),
      'ERR_INVALID_ARG_TYPE',
    );
    const { transport, peerFd } = SeqpacketTransport.pair('test');
    try {
      await expectRefused(() => transport.send(Buffer.from('x'), [0, , 1] as number[]), 'ERR_INVALID_ARG_TYPE');
    } finally {
      transport.close();
      fs.closeSync(peerFd);
    }
    const { checkpointConnections, restoreConnections } = await import('../../lib');
    await expectRefused(() => checkpointConnections([,] as never), 'ERR_INVALID_ARG_TYPE');
    await expectRefused(() => restoreConnections([,] as never), 'ERR_CONNECTION_IMAGE_INVALID');
  });
});
