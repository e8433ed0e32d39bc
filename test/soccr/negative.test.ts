/**
 * Bad input gets a typed error with a code and leaves nothing behind: no fd leaked, no socket in
 * repair mode, the original connection still working.
 */
import { execFileSync } from 'node:child_process';
import * as dgram from 'node:dgram';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';

import {
  ConnectionImageError,
  InvalidArgumentError,
  NftablesLock,
  NftablesLockError,
  NodeCriuError,
  SoccrError,
  checkpointConnection,
  decodeConnectionImage,
  restoreConnection,
  soccr,
} from '../../lib';
import type { ConnectionImage } from '../../lib';
import { TrafficEndpoint, expectExactTwoWay } from '../helpers/traffic';
import { fdsInRepairMode, tcpPair } from '../helpers/soccr';
import { readableCopy } from '../helpers/other-uid';
import { type FdSnapshot, newFds, openFds } from '../helpers/fds';

async function expectCode(
  promiseOrFn: Promise<unknown> | (() => unknown),
  code: string,
  Class: abstract new (...args: never[]) => unknown = NodeCriuError,
): Promise<NodeCriuError> {
  let thrown: unknown;
  try {
    await (typeof promiseOrFn === 'function' ? promiseOrFn() : promiseOrFn);
  } catch (error) {
    thrown = error;
  }
  expect(thrown).toBeInstanceOf(Class);
  expect((thrown as NodeCriuError).code).toBe(code);
  return thrown as NodeCriuError;
}

let fdsAtStart: FdSnapshot = new Map();

beforeEach(() => {
  fdsAtStart = openFds();
});

afterEach(async () => {
  await new Promise((resolve) => setImmediate(resolve));
  expect(fdsInRepairMode()).toEqual([]);
  expect(newFds(fdsAtStart)).toEqual([]);
});

/** The pair still carries data both ways after a refused checkpoint. */
async function expectStillWorks(a: net.Socket, b: net.Socket): Promise<void> {
  const ea = new TrafficEndpoint({ seed: 91, total: 20_000 }).attach(a);
  const eb = new TrafficEndpoint({ seed: 92, total: 30_000 }).attach(b);
  await Promise.all([ea.waitForReceived(30_000), eb.waitForReceived(20_000)]);
  expectExactTwoWay(ea.report(), eb.report(), { aToB: 20_000, bToA: 30_000 });
}

describe('what cannot be checkpointed', () => {
  it('not a socket: ENOTSOCK from the kernel; not a net.Socket: ERR_INVALID_ARG_TYPE', async () => {
    const fd = fs.openSync('/dev/null', 'r');
    try {
      const error = await expectCode(() => soccr.pause(fd), 'ENOTSOCK', SoccrError);
      expect(error.syscall).toBe('getsockopt');
      expect(error.errno).toBe(-88);
    } finally {
      fs.closeSync(fd);
    }
    await expectCode(checkpointConnection({} as net.Socket), 'ERR_INVALID_ARG_TYPE', InvalidArgumentError);
    await expectCode(() => soccr.pause(-1), 'ERR_INVALID_ARG_TYPE', InvalidArgumentError);
  });

  it('UDP socket: ERR_SOCKET_NOT_TCP', async () => {
    const udp = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => udp.bind(0, '127.0.0.1', resolve));
    try {
      const fd = (udp as unknown as { _handle: { fd: number } })._handle.fd;
      await expectCode(() => soccr.pause(fd), 'ERR_SOCKET_NOT_TCP', SoccrError);
    } finally {
      await new Promise<void>((resolve) => udp.close(resolve));
    }
  });

  it('listening socket: ERR_SOCKET_LISTENING', async () => {
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const fd = (server as unknown as { _handle: { fd: number } })._handle.fd;
      await expectCode(() => soccr.pause(fd), 'ERR_SOCKET_LISTENING', SoccrError);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('unconnected TCP socket: ENOTCONN', async () => {
    const fd = soccr.createTcpSocket(4);
    try {
      await expectCode(() => soccr.pause(fd), 'ENOTCONN', SoccrError);
    } finally {
      soccr.closeFd(fd);
    }
  });

  it('destroyed or still connecting net.Socket', async () => {
    const pair = await tcpPair(4);
    try {
      pair.accepted.destroy();
      await expectCode(checkpointConnection(pair.accepted), 'ERR_SOCKET_DESTROYED', SoccrError);
      const connecting = net.connect(1, '127.0.0.1');
      connecting.on('error', () => undefined);
      await expectCode(checkpointConnection(connecting), 'ERR_SOCKET_CONNECTING', SoccrError);
      connecting.destroy();
    } finally {
      await pair.close();
    }
  });

  it('bad options and arguments fail before anything is touched', async () => {
    const pair = await tcpPair(4);
    try {
      await expectCode(
        checkpointConnection(pair.accepted, { lock: 'iptables' as 'none' }),
        'ERR_INVALID_ARG_VALUE',
        InvalidArgumentError,
      );
      await expectCode(
        checkpointConnection(pair.accepted, { netns: 'relative/path' }),
        'ERR_INVALID_ARG_VALUE',
        InvalidArgumentError,
      );
      await expectCode(
        checkpointConnection(pair.accepted, { flushTimeoutMs: -1 }),
        'ERR_OUT_OF_RANGE',
        InvalidArgumentError,
      );
      const handle = soccr.pause(pair.accepted);
      await expectCode(() => handle.getQueueBytes('both' as 'recv'), 'ERR_INVALID_ARG_VALUE', InvalidArgumentError);
      handle.resume();
      await expectCode(() => handle.getSkData(), 'EBADF', SoccrError);
      pair.accepted.write(Buffer.alloc(10));
      pair.accepted.cork();
      pair.accepted.write(Buffer.alloc(10));
      await expectCode(() => soccr.pause(pair.accepted), 'ERR_SOCKET_WRITE_PENDING', SoccrError);
      pair.accepted.uncork();
      expect(soccr.isInRepairMode(pair.accepted)).toBe(false);
      const got = new Promise((resolve) => pair.client.on('data', resolve));
      await got;
      pair.client.removeAllListeners('data');
      await expectStillWorks(pair.client, pair.accepted);
    } finally {
      await pair.close();
    }
  });
});

describe('what cannot be restored', () => {
  async function takeImage(
    keepRunning: boolean,
  ): Promise<{ image: ConnectionImage; pair: Awaited<ReturnType<typeof tcpPair>> }> {
    const pair = await tcpPair(4);
    const image = await checkpointConnection(pair.accepted, { keepRunning, lock: keepRunning ? 'filter' : 'none' });
    return { image, pair };
  }

  it('bad or truncated images: ERR_CONNECTION_IMAGE_INVALID', async () => {
    const { image, pair } = await takeImage(true);
    try {
      await expectCode(
        restoreConnection({ ...image, recvQueue: Buffer.alloc(1) }),
        'ERR_CONNECTION_IMAGE_INVALID',
        ConnectionImageError,
      );
      await expectCode(
        restoreConnection({ ...image, version: 7 } as unknown as ConnectionImage),
        'ERR_CONNECTION_IMAGE_INVALID',
        ConnectionImageError,
      );
      await expectCode(
        () => decodeConnectionImage(Buffer.from([1, 2, 3])),
        'ERR_CONNECTION_IMAGE_INVALID',
        ConnectionImageError,
      );
    } finally {
      await pair.close();
    }
  });

  it('4-tuple still in use (original alive): EADDRNOTAVAIL, original unharmed', async () => {
    const { image, pair } = await takeImage(true);
    try {
      const error = await expectCode(restoreConnection(image), 'EADDRNOTAVAIL', SoccrError);
      expect(error.syscall).toBe('libsoccr_restore');
      await expectStillWorks(pair.client, pair.accepted);
    } finally {
      await pair.close();
    }
  });

  it('local address not on this host: EADDRNOTAVAIL', async () => {
    const { image, pair } = await takeImage(true);
    try {
      const moved: ConnectionImage = { ...image, local: { ...image.local, address: '192.0.2.77' } };
      await expectCode(restoreConnection(moved), 'EADDRNOTAVAIL', SoccrError);
      await expectCode(restoreConnection(image, { netns: '/nonexistent/netns' }), 'ENOENT', SoccrError);
    } finally {
      await pair.close();
    }
  });

  it('a lock table that does not exist is reported (nft ENOENT) only when adding', async () => {
    const lock = await NftablesLock.create();
    await lock.destroy();
    const pair = await tcpPair(4);
    try {
      await expectCode(checkpointConnection(pair.accepted, { lock }), 'ENOENT');
      expect(pair.accepted.destroyed).toBe(false);
      await expectStillWorks(pair.client, pair.accepted);
    } finally {
      await pair.close();
    }
  });
});

describe('lock prerequisites', () => {
  it("'nftables' lock without an nft binary: ERR_NFT_NOT_FOUND, the connection untouched", async () => {
    const saved = process.env.NODE_CRIU_NFT;
    process.env.NODE_CRIU_NFT = '/nonexistent/nft';
    const pair = await tcpPair(4);
    try {
      await expectCode(
        checkpointConnection(pair.accepted, { lock: 'nftables' }),
        'ERR_NFT_NOT_FOUND',
        NftablesLockError,
      );
      await expectCode(NftablesLock.create(), 'ERR_NFT_NOT_FOUND', NftablesLockError);
      expect(pair.accepted.destroyed).toBe(false);
      expect(soccr.isInRepairMode(pair.accepted)).toBe(false);
      await expectStillWorks(pair.client, pair.accepted);
    } finally {
      if (saved === undefined) delete process.env.NODE_CRIU_NFT;
      else process.env.NODE_CRIU_NFT = saved;
      await pair.close();
    }
  });
});

describe('privileges', () => {
  it('without CAP_NET_ADMIN (uid 65534): EPERM, nothing changed', () => {
    // uid 65534 may not be able to read the checkout (a clone under /root): it runs a copy.
    const copy = readableCopy(['soccr-unprivileged.js']);
    let out: string;
    try {
      out = execFileSync(process.execPath, [copy.at('test/fixtures/soccr-unprivileged.js')], {
        uid: 65534,
        gid: 65534,
        cwd: copy.root,
        encoding: 'utf8',
        timeout: 30000,
      });
    } finally {
      copy.dispose();
    }
    const result = JSON.parse(out);
    expect(result).toEqual({
      // TCP_REPAIR needs CAP_NET_ADMIN.
      none: { code: 'EPERM', errno: -1, syscall: 'libsoccr_pause', name: 'SoccrError' },
      // Measured on this kernel (unprivileged_bpf_disabled=2): even a classic filter is refused.
      filter: { code: 'EPERM', errno: -1, syscall: 'setsockopt', name: 'SoccrError' },
      fdsBefore: result.fdsBefore,
      fdsAfter: result.fdsBefore,
      inRepair: false,
      stillWorks: true,
    });
  });

  it('a handle collected without resume() or release() turns repair off and closes its dup', () => {
    const fixture = path.join(__dirname, '..', 'fixtures', 'soccr-gc.js');
    const out = execFileSync(process.execPath, ['--expose-gc', fixture], { encoding: 'utf8', timeout: 30000 });
    const result = JSON.parse(out);
    expect(result.inRepairWhilePaused).toBe(true);
    expect(result.inRepairAfterGc).toBe(false);
    expect(result.echoed).toBe('after-gc');
    expect(result.fdsAfter).toBe(result.fdsBefore);
    expect(result.socketInRepairWhilePaused).toBe(true);
    expect(result.socketRead).toBe('read-after-gc');
    expect(result.socketErrors).toEqual([]);
  });
});
