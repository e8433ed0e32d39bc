/**
 * NftablesLock's element bookkeeping: removing some tuples names them; removing exactly the tuples
 * this process added flushes the sets (the fast path of a batch restore); nothing else is touched.
 */
import { NftablesLock } from '../../lib';
import type { ConnectionTuple } from '../../lib';
import { NetnsLab } from '../helpers/netns';

function tuple(remotePort: number, localPort = 80, v6 = false): ConnectionTuple {
  return v6
    ? { local: { family: 6, address: '::1', port: localPort }, remote: { family: 6, address: '::1', port: remotePort } }
    : { local: { family: 4, address: '127.0.0.1', port: localPort }, remote: { family: 4, address: '127.0.0.1', port: remotePort } };
}

describe('NftablesLock elements', () => {
  const lab = new NetnsLab();
  let name: string;
  let lock: NftablesLock;

  const elements = (set: 'v4' | 'v6'): string =>
    lab.exec(name, 'nft', ['list', 'set', 'inet', lock.table, set]).replace(/\s+/g, ' ');

  beforeAll(async () => {
    name = lab.add('nftlock');
    lock = await NftablesLock.create({ netns: lab.path(name) });
  });

  afterAll(async () => {
    await lock.destroy();
    lab.destroy();
  });

  it('names elements for a partial remove and flushes for a complete one', async () => {
    await lock.add([tuple(1001), tuple(1002), tuple(1003), tuple(2001, 80, true)]);
    expect(elements('v4')).toContain('1001');
    expect(elements('v6')).toContain('2001');

    await lock.remove([tuple(1002)]);
    expect(elements('v4')).toContain('1001');
    expect(elements('v4')).not.toContain('1002');

    // Removing an element that is not there fails (and changes nothing), as before.
    await expect(lock.remove([tuple(1002)])).rejects.toMatchObject({ code: 'ENOENT' });
    expect(elements('v4')).toContain('1003');

    // Exactly what is left: one flush of both sets.
    await lock.remove([tuple(1001), tuple(1003), tuple(2001, 80, true)]);
    expect(elements('v4')).not.toMatch(/100[13]/);
    expect(elements('v6')).not.toContain('2001');

    // The lock keeps working after a flush.
    await lock.add([tuple(3001)]);
    expect(elements('v4')).toContain('3001');
    await lock.remove([tuple(3001)]);
    expect(elements('v4')).not.toContain('3001');
  });
});
