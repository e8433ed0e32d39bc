/**
 * A service address moves from host A to host B; client C's neighbour cache still holds A's MAC.
 * With the announcement (addAddress's default) C's entry turns to B's MAC without anyone flushing
 * anything; without it, it is still A's right after the move (so the first test can fail). IPv4
 * (gratuitous ARP) and IPv6 (unsolicited Neighbour Advertisement). Then the typed errors, with
 * no fd left open.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import {
  AddressError,
  addAddress,
  announceAddress,
  CommandError,
  InvalidArgumentError,
  removeAddress,
} from '../../lib';
import { HostLab, type LabHost } from '../helpers/hosts';
import { waitUntil } from '../helpers/wait';
import { type FdSnapshot, newFds, openFds } from '../helpers/fds';

const V6_PREFIX = 'fd00:77::';

let lab: HostLab;
let a: LabHost;
let b: LabHost;
let c: LabHost;

beforeAll(() => {
  lab = new HostLab();
  a = lab.addHost('a');
  b = lab.addHost('b');
  c = lab.addHost('c', 10);
  // C's own IPv6 address; nodad: usable at once, no DAD wait.
  lab.ip(c, ['addr', 'add', `${V6_PREFIX}10/64`, 'dev', 'eth0', 'nodad']);
});

afterAll(async () => {
  await lab?.destroy();
});

interface Neighbour {
  lladdr?: string;
  state?: string[];
}

function neighbour(host: LabHost, address: string): Neighbour | undefined {
  const out = lab.ip(host, ['-j', 'neigh', 'show', 'to', address, 'dev', 'eth0']);
  return (JSON.parse(out || '[]') as Neighbour[])[0];
}

function describeNeighbour(host: LabHost, address: string): string {
  return JSON.stringify(neighbour(host, address) ?? null);
}

/** C sends one datagram to `address`: its kernel resolves the address (ARP / NS) and caches the MAC. */
function clientTalksTo(address: string): void {
  lab.exec(c, 'bash', ['-c', 'echo hello > "/dev/udp/$0/9"', address]);
}

/** The address on A, C's entry for it REACHABLE at A's MAC. */
async function serviceOnA(address: string, cidr: string): Promise<void> {
  await addAddress({ cidr, device: 'eth0', netns: a.netnsPath, announce: false, timeoutMs: 10_000 });
  clientTalksTo(address);
  await waitUntil(
    () => {
      const n = neighbour(c, address);
      return n?.lladdr === a.mac && (n.state ?? []).includes('REACHABLE');
    },
    { what: `C's entry for ${address} to be A's MAC, REACHABLE`, detail: () => describeNeighbour(c, address) },
  );
}

async function moveToB(cidr: string, announce: boolean): Promise<void> {
  await removeAddress({ cidr, device: 'eth0', netns: a.netnsPath, timeoutMs: 10_000 });
  await addAddress({ cidr, device: 'eth0', netns: b.netnsPath, announce, timeoutMs: 10_000 });
}

/** Leaves B without the address whatever the test did (the lab goes in afterAll). */
async function dropEverywhere(cidr: string): Promise<void> {
  for (const host of [a, b])
    await removeAddress({ cidr, device: 'eth0', netns: host.netnsPath }).catch(() => undefined);
}

// C's entry stays REACHABLE for 15-45 s (base_reachable_time 30 s) unless told otherwise: a few
// seconds are ample for the announcement and far too short for the entry to expire by itself.
const SWITCH_TIMEOUT_MS = 3000;

describe.each([
  { family: 'IPv4', service: '10.77.0.100', control: '10.77.0.101', prefix: 24 },
  { family: 'IPv6', service: `${V6_PREFIX}100`, control: `${V6_PREFIX}101`, prefix: 64 },
])('$family: the address moves and is announced', ({ service, control, prefix }) => {
  it("turns C's neighbour entry to B's MAC without any flush", async () => {
    const cidr = `${service}/${prefix}`;
    try {
      await serviceOnA(service, cidr);
      await moveToB(cidr, true);
      await waitUntil(() => lab.neighbourMac(c, service) === b.mac, {
        timeoutMs: SWITCH_TIMEOUT_MS,
        what: `C's entry for ${service} to become B's MAC ${b.mac}`,
        detail: () => describeNeighbour(c, service),
      });
    } finally {
      await dropEverywhere(cidr);
    }
  });

  it("control: without the announcement C's entry is still A's MAC after the move", async () => {
    const cidr = `${control}/${prefix}`;
    try {
      await serviceOnA(control, cidr);
      await moveToB(cidr, false);
      expect(lab.neighbourMac(c, control)).toBe(a.mac);
      // The same move's announcement, made now, is what switches it.
      await announceAddress({ address: control, device: 'eth0', netns: b.netnsPath });
      await waitUntil(() => lab.neighbourMac(c, control) === b.mac, {
        timeoutMs: SWITCH_TIMEOUT_MS,
        what: `C's entry for ${control} to become B's MAC ${b.mac}`,
        detail: () => describeNeighbour(c, control),
      });
    } finally {
      await dropEverywhere(cidr);
    }
  });
});

describe('typed errors, nothing left open', () => {
  let fdsAtStart: FdSnapshot = new Map();
  let scratch: string;

  beforeEach(() => {
    scratch = fs.mkdtempSync(path.join(lab.root, 'scratch-'));
    fdsAtStart = openFds();
  });

  afterEach(() => {
    fs.rmSync(scratch, { recursive: true, force: true });
    expect(newFds(fdsAtStart)).toEqual([]);
  });

  async function rejection(promise: Promise<unknown>): Promise<Error & { code?: string; syscall?: string }> {
    try {
      await promise;
    } catch (error) {
      return error as Error & { code?: string };
    }
    throw new Error('expected a rejection');
  }

  it('no such device: ENODEV from the lookup in the target namespace', async () => {
    const error = await rejection(announceAddress({ address: '10.77.0.1', device: 'nosuch0', netns: a.netnsPath }));
    expect(error).toBeInstanceOf(AddressError);
    expect(error.code).toBe('ENODEV');
    expect(error.syscall).toBe('ioctl');
    const v6 = await rejection(announceAddress({ address: `${V6_PREFIX}1`, device: 'nosuch0', netns: a.netnsPath }));
    expect(v6.code).toBe('ENODEV');
  });

  it('a device that is not Ethernet: ENOTSUP', async () => {
    const error = await rejection(announceAddress({ address: '127.0.0.1', device: 'lo', netns: a.netnsPath }));
    expect(error).toBeInstanceOf(AddressError);
    expect(error.code).toBe('ENOTSUP');
  });

  it('an IPv6 address not on the interface: EADDRNOTAVAIL (it would be the source)', async () => {
    const error = await rejection(announceAddress({ address: `${V6_PREFIX}77`, device: 'eth0', netns: a.netnsPath }));
    expect(error).toBeInstanceOf(AddressError);
    expect(error.code).toBe('EADDRNOTAVAIL');
    expect(error.syscall).toBe('bind');
  });

  it('bad namespaces: ERR_INVALID_NETNS for a file that is not one, ENOENT for a missing one', async () => {
    const notNs = path.join(scratch, 'plain-file');
    fs.writeFileSync(notNs, '');
    const missing = path.join(scratch, 'missing');
    for (const address of ['10.77.0.1', `${V6_PREFIX}1`]) {
      const wrong = await rejection(announceAddress({ address, device: 'eth0', netns: notNs }));
      expect(wrong).toBeInstanceOf(AddressError);
      expect(wrong.code).toBe('ERR_INVALID_NETNS');
      expect((await rejection(announceAddress({ address, device: 'eth0', netns: missing }))).code).toBe('ENOENT');
    }
    const add = await rejection(addAddress({ cidr: '10.77.0.150/24', device: 'eth0', netns: notNs }));
    expect(add).toBeInstanceOf(AddressError);
    expect(add.code).toBe('ERR_INVALID_NETNS');
    expect((await rejection(removeAddress({ cidr: '10.77.0.150/24', device: 'eth0', netns: missing }))).code).toBe(
      'ENOENT',
    );
  });

  it('bad arguments: InvalidArgumentError before anything is sent', async () => {
    for (const options of [
      { address: 'not-an-ip', device: 'eth0' },
      { address: '10.77.0.1/24', device: 'eth0' },
      { address: '10.77.0.1', device: 'eth0; reboot' },
      { address: '10.77.0.1', device: 'eth0', netns: 'relative/path' },
      { address: '10.77.0.1', device: 'eth0', count: 0 },
    ]) {
      const error = await rejection(announceAddress(options));
      expect(error).toBeInstanceOf(InvalidArgumentError);
      expect(error.code).toMatch(/^ERR_(INVALID_ARG_VALUE|OUT_OF_RANGE)$/);
    }
  });

  it('ip failures are CommandErrors: removing an address that is not there', async () => {
    const error = await rejection(removeAddress({ cidr: '10.77.0.199/24', device: 'eth0', netns: a.netnsPath }));
    expect(error).toBeInstanceOf(CommandError);
    expect(error.code).toBe('ERR_COMMAND_FAILED');
  });

  it('without CAP_NET_RAW: EPERM naming it, nothing left open; the same with it succeeds', () => {
    // A child as root whose bounding set lacks CAP_NET_RAW (setns still works: CAP_SYS_ADMIN).
    const script = `
      const fs = require('node:fs');
      const { announceAddress } = require(process.argv[1]);
      const before = fs.readdirSync('/proc/self/fd').length;
      announceAddress({ address: process.argv[2], device: 'eth0', netns: process.argv[3], count: 1 })
        .then(() => null, (e) => ({ name: e.name, code: e.code, capability: e.capability, message: e.message }))
        .then((error) => {
          const leaked = fs.readdirSync('/proc/self/fd').length - before;
          process.stdout.write(JSON.stringify({ error, leaked }));
        });`;
    const dist = path.join(__dirname, '..', '..', 'dist', 'index.js');
    const announceAs = (drop: string[], address: string) =>
      JSON.parse(
        execFileSync(
          'setpriv',
          [
            '--inh-caps=-all',
            '--ambient-caps=-all',
            ...drop,
            process.execPath,
            '-e',
            script,
            dist,
            address,
            a.netnsPath,
          ],
          { encoding: 'utf8', timeout: 30_000 },
        ),
      ) as { error: { name: string; code: string; capability?: string; message: string } | null; leaked: number };
    for (const address of [a.address, `${V6_PREFIX}1`]) {
      const refused = announceAs(['--bounding-set=-net_raw'], address);
      expect(refused.error).toMatchObject({ name: 'AddressError', code: 'EPERM', capability: 'CAP_NET_RAW' });
      expect(refused.error?.message).toContain('lacks CAP_NET_RAW');
      expect(refused.leaked).toBe(0);
    }
    // The IPv6 source must be on A; the IPv4 one needs no address.
    lab.ip(a, ['addr', 'add', `${V6_PREFIX}1/64`, 'dev', 'eth0', 'nodad']);
    try {
      for (const address of [a.address, `${V6_PREFIX}1`])
        expect(announceAs([], address)).toEqual({ error: null, leaked: 0 });
    } finally {
      lab.ip(a, ['addr', 'del', `${V6_PREFIX}1/64`, 'dev', 'eth0']);
    }
  });

  it('timeoutMs and signal stop the repeats', async () => {
    const base = { address: a.address, device: 'eth0', netns: a.netnsPath, count: 5, intervalMs: 60_000 };
    const timedOut = await rejection(announceAddress({ ...base, timeoutMs: 50 }));
    expect(timedOut).toBeInstanceOf(AddressError);
    expect(timedOut.code).toBe('ERR_ANNOUNCE_TIMEOUT');
    const controller = new AbortController();
    const pending = announceAddress({ ...base, signal: controller.signal });
    controller.abort();
    expect((await rejection(pending)).code).toBe('ABORT_ERR');
    expect((await rejection(announceAddress({ ...base, signal: AbortSignal.abort() }))).code).toBe('ABORT_ERR');
  });
});
