/**
 * NftablesLock's elements, which go in and out over netlink (csrc/nft_elements.cc), read back
 * with nft itself: every key field lands where nft reads it (IPv4, IPv6, IPv4-mapped), a change
 * is all or nothing, a batch larger than one netlink message is one transaction, bad tuples and a
 * missing table are typed errors, and no fd is left behind.
 */

import { NftablesLock } from '../../lib';
import type { ConnectionTuple } from '../../lib';
import { NetnsLab } from '../helpers/netns';
import { newFds, openFds } from '../helpers/fds';

function tuple(remotePort: number, localPort = 80, v6 = false): ConnectionTuple {
  return v6
    ? { local: { family: 6, address: '::1', port: localPort }, remote: { family: 6, address: '::1', port: remotePort } }
    : {
        local: { family: 4, address: '127.0.0.1', port: localPort },
        remote: { family: 4, address: '127.0.0.1', port: remotePort },
      };
}

type Element = [string, number, string, number];

describe('NftablesLock elements', () => {
  const lab = new NetnsLab();
  let name: string;
  let lock: NftablesLock;

  /** The set's elements as nft reads them: [remote, remote port, local, local port], sorted. */
  const elements = (set: 'v4' | 'v6'): Element[] => {
    const json = JSON.parse(lab.exec(name, 'nft', ['-j', 'list', 'set', 'inet', lock.table, set])) as {
      nftables: { set?: { elem?: { concat: Element }[] } }[];
    };
    const found = json.nftables.find((entry) => entry.set)?.set?.elem ?? [];
    return found.map((e) => e.concat).sort((a, b) => a.join(' ').localeCompare(b.join(' ')));
  };

  beforeAll(async () => {
    name = lab.add('nftlock');
    lock = await NftablesLock.create({ netns: lab.path(name) });
  });

  afterAll(async () => {
    await lock.destroy();
    lab.destroy();
  });

  it('writes every key field as nft reads it: IPv4, IPv6, IPv4-mapped (into the IPv4 set)', async () => {
    const fds = openFds();
    await lock.add([
      {
        local: { family: 4, address: '10.1.2.3', port: 80 },
        remote: { family: 4, address: '192.168.200.1', port: 65535 },
      },
      {
        local: { family: 6, address: '::ffff:127.0.0.1', port: 1 },
        remote: { family: 6, address: '::ffff:10.0.0.2', port: 0 },
      },
      {
        local: { family: 6, address: 'fe80::1', port: 443 },
        remote: { family: 6, address: '2001:db8::ff00:42:8329', port: 4660 },
      },
    ]);
    expect(elements('v4')).toEqual([
      ['10.0.0.2', 0, '127.0.0.1', 1],
      ['192.168.200.1', 65535, '10.1.2.3', 80],
    ]);
    expect(elements('v6')).toEqual([['2001:db8::ff00:42:8329', 4660, 'fe80::1', 443]]);
    // Adding what is already there is not an error.
    await lock.add([
      {
        local: { family: 4, address: '10.1.2.3', port: 80 },
        remote: { family: 4, address: '192.168.200.1', port: 65535 },
      },
    ]);
    await lock.remove([
      {
        local: { family: 4, address: '10.1.2.3', port: 80 },
        remote: { family: 4, address: '192.168.200.1', port: 65535 },
      },
      {
        local: { family: 6, address: '::ffff:127.0.0.1', port: 1 },
        remote: { family: 6, address: '::ffff:10.0.0.2', port: 0 },
      },
      {
        local: { family: 6, address: 'fe80::1', port: 443 },
        remote: { family: 6, address: '2001:db8::ff00:42:8329', port: 4660 },
      },
    ]);
    expect(elements('v4')).toEqual([]);
    expect(elements('v6')).toEqual([]);
    expect(newFds(fds)).toEqual([]);
  });

  it('removes exactly the named tuples; a missing one fails the whole change (ENOENT), nothing removed', async () => {
    await lock.add([tuple(1001), tuple(1002), tuple(1003), tuple(2001, 80, true)]);
    await lock.remove([tuple(1002)]);
    expect(elements('v4').map((e) => e[1])).toEqual([1001, 1003]);
    expect(elements('v6').map((e) => e[1])).toEqual([2001]);

    const fds = openFds();
    await expect(lock.remove([tuple(1001), tuple(1002)])).rejects.toMatchObject({
      name: 'NftablesLockError',
      code: 'ENOENT',
      syscall: 'nftables',
    });
    expect(elements('v4').map((e) => e[1])).toEqual([1001, 1003]);
    expect(newFds(fds)).toEqual([]);

    await lock.remove([tuple(1001), tuple(1003), tuple(2001, 80, true)]);
    expect(elements('v4')).toEqual([]);
    expect(elements('v6')).toEqual([]);
  });

  it('a batch larger than one netlink message (6,000 IPv4 + 2,500 IPv6 tuples) is one transaction', async () => {
    const many: ConnectionTuple[] = [];
    for (let i = 0; i < 6000; i++) {
      many.push({
        local: { family: 4, address: '127.0.0.1', port: 8080 },
        remote: { family: 4, address: `127.0.${i >> 8}.${i & 255}`, port: 10000 + i },
      });
    }
    for (let i = 0; i < 2500; i++) {
      many.push({
        local: { family: 6, address: '::1', port: 8080 },
        remote: { family: 6, address: `fd00::${(i + 1).toString(16)}`, port: 20000 + i },
      });
    }
    await lock.add(many);
    const v4 = elements('v4');
    const v6 = elements('v6');
    expect(v4).toHaveLength(6000);
    expect(v6).toHaveLength(2500);
    expect(new Set(v4.map((e) => e[1]))).toEqual(new Set(many.slice(0, 6000).map((t) => t.remote.port)));
    expect(new Set(v6.map((e) => e[0]))).toEqual(new Set(many.slice(6000).map((t) => t.remote.address)));

    // One missing tuple at the very end (in the last message): nothing at all is removed.
    await expect(lock.remove([...many, tuple(9)])).rejects.toMatchObject({ code: 'ENOENT' });
    expect(elements('v4')).toHaveLength(6000);
    expect(elements('v6')).toHaveLength(2500);
    await lock.remove(many);
    expect(elements('v4')).toEqual([]);
    expect(elements('v6')).toEqual([]);
  });

  it('malformed tuples are InvalidArgumentErrors before anything changes; a missing table is ENOENT', async () => {
    const bad: unknown[] = [
      [{ local: { family: 4, address: '127.0.0.256', port: 1 }, remote: tuple(1).remote }],
      [{ local: tuple(1).local, remote: { family: 6, address: 'not-an-address', port: 1 } }],
      [{ local: tuple(1).local, remote: { family: 4, address: '127.0.0.1', port: 65536 } }],
      [{ local: tuple(1).local, remote: { family: 4, address: '127.0.0.1', port: 1.5 } }],
      [{ local: tuple(1).local, remote: { family: 5, address: '127.0.0.1', port: 1 } }],
      [tuple(1), null],
      [{ local: undefined, remote: tuple(1).remote }],
      [{ local: tuple(1).local, remote: 'not an address' }],
      'not an array',
    ];
    for (const tuples of bad) {
      await expect(lock.add(tuples as ConnectionTuple[])).rejects.toMatchObject({ name: 'InvalidArgumentError' });
      await expect(lock.remove(tuples as ConnectionTuple[])).rejects.toMatchObject({ name: 'InvalidArgumentError' });
    }
    expect(elements('v4')).toEqual([]);

    const fds = openFds();
    const gone = NftablesLock.fromRef({ table: 'node_criu_no_such_table', netns: lab.path(name) });
    await expect(gone.add([tuple(1)])).rejects.toMatchObject({ name: 'NftablesLockError', code: 'ENOENT' });
    await expect(gone.remove([tuple(1)])).rejects.toMatchObject({ name: 'NftablesLockError', code: 'ENOENT' });
    const noNamespace = NftablesLock.fromRef({ table: lock.table, netns: `/run/netns/${name}-missing` });
    await expect(noNamespace.add([tuple(1)])).rejects.toMatchObject({
      name: 'NftablesLockError',
      code: 'ENOENT',
      syscall: 'open',
    });
    expect(newFds(fds)).toEqual([]);
  });
});
