/**
 * lib/sys/address.ts without root: every option is checked before anything runs or is sent, and
 * the public functions reject with InvalidArgumentError (never a plain TypeError).
 */
import { operationOfNativeFailure } from '../../../lib/capabilities';
import { InvalidArgumentError } from '../../../lib/errors';
import {
  addAddress,
  announceAddress,
  checkAddressChangeOptions,
  checkAnnounceOptions,
  checkAnnouncedAddress,
  checkCidr,
  checkDevice,
  removeAddress,
} from '../../../lib/sys/address';

function invalid(fn: () => unknown, code = 'ERR_INVALID_ARG_VALUE'): void {
  let thrown: unknown;
  try {
    fn();
  } catch (error) {
    thrown = error;
  }
  expect(thrown).toBeInstanceOf(InvalidArgumentError);
  expect((thrown as InvalidArgumentError).code).toBe(code);
}

describe('addresses', () => {
  it('reads IPv4 and IPv6 unicast addresses into bytes', () => {
    const v4 = checkAnnouncedAddress('10.77.0.100');
    expect(v4.family).toBe(4);
    expect([...v4.bytes]).toEqual([10, 77, 0, 100]);
    const v6 = checkAnnouncedAddress('fd00:77::100');
    expect(v6.family).toBe(6);
    expect(Buffer.from(v6.bytes).toString('hex')).toBe('fd000077000000000000000000000100');
    expect(checkAnnouncedAddress('fe80::1').family).toBe(6);
  });

  it('refuses what is not one unicast address', () => {
    for (const bad of [
      '',
      'host.example',
      '10.0.0',
      '10.0.0.256',
      '010.0.0.1',
      '10.0.0.1/24',
      'fe80::1%eth0',
      ' 10.0.0.1',
    ])
      invalid(() => checkAnnouncedAddress(bad));
    for (const notUnicast of ['0.0.0.0', '255.255.255.255', '224.0.0.1', '239.1.2.3', '::', 'ff02::1'])
      invalid(() => checkAnnouncedAddress(notUnicast));
    for (const notText of [undefined, null, 42, Uint8Array.from([10, 0, 0, 1])])
      invalid(() => checkAnnouncedAddress(notText), 'ERR_INVALID_ARG_TYPE');
  });

  it('reads ADDRESS[/PREFIX] with the prefix in the family range', () => {
    expect(checkCidr('10.77.0.100/24')).toEqual({ cidr: '10.77.0.100/24', address: '10.77.0.100', family: 4 });
    expect(checkCidr('10.77.0.100')).toEqual({ cidr: '10.77.0.100', address: '10.77.0.100', family: 4 });
    expect(checkCidr('fd00:77::100/64').family).toBe(6);
    expect(checkCidr('fd00:77::100/128').address).toBe('fd00:77::100');
    invalid(() => checkCidr('10.77.0.100/33'), 'ERR_OUT_OF_RANGE');
    invalid(() => checkCidr('fd00::1/129'), 'ERR_OUT_OF_RANGE');
    for (const bad of ['10.77.0.100/', '10.77.0.100/24/1', '10.77.0.100/x', '/24', '10.77.0.100/1234', '224.0.0.1/4'])
      invalid(() => checkCidr(bad));
  });
});

describe('device names', () => {
  it('accepts what Linux names interfaces', () => {
    for (const name of ['eth0', 'br-lan', 'veth1@if2', 'eth0.100', 'eth0:1', 'a', 'x'.repeat(15)])
      expect(checkDevice(name)).toBe(name);
  });

  it('refuses empty, long, path-like and shell-like names', () => {
    for (const bad of ['', 'x'.repeat(16), 'eth/0', '.', '..', 'eth0 up', 'eth0;reboot', '$(x)', 'eth\0', 'étх0'])
      invalid(() => checkDevice(bad));
    invalid(() => checkDevice(0), 'ERR_INVALID_ARG_TYPE');
  });
});

describe('announceAddress options', () => {
  const base = { address: '10.77.0.100', device: 'eth0' };

  it('fills in the defaults: 3 announcements 100 ms apart', () => {
    const o = checkAnnounceOptions(base);
    expect(o).toMatchObject({ family: 4, device: 'eth0', count: 3, intervalMs: 100 });
    expect(o).not.toHaveProperty('netns');
    expect(o).not.toHaveProperty('timeoutMs');
    expect(checkAnnounceOptions({ ...base, netns: '/run/netns/b', count: 1, intervalMs: 0 })).toMatchObject({
      netns: '/run/netns/b',
      count: 1,
      intervalMs: 0,
    });
  });

  it('refuses bad values with their code', () => {
    invalid(() => checkAnnounceOptions(undefined), 'ERR_INVALID_ARG_TYPE');
    invalid(() => checkAnnounceOptions({ ...base, extra: 1 }));
    invalid(() => checkAnnounceOptions({ ...base, netns: 'run/netns/b' }));
    invalid(() => checkAnnounceOptions({ ...base, netns: '/run/netns/\0b' }));
    invalid(() => checkAnnounceOptions({ ...base, netns: 7 }), 'ERR_INVALID_ARG_TYPE');
    for (const count of [0, 101, 1.5, '3', NaN])
      invalid(() => checkAnnounceOptions({ ...base, count }), 'ERR_OUT_OF_RANGE');
    for (const intervalMs of [-1, 60_001, 0.5, Infinity])
      invalid(() => checkAnnounceOptions({ ...base, intervalMs }), 'ERR_OUT_OF_RANGE');
    for (const timeoutMs of [0, -5, Infinity, 2 ** 31, '100'])
      invalid(() => checkAnnounceOptions({ ...base, timeoutMs }), 'ERR_OUT_OF_RANGE');
    invalid(() => checkAnnounceOptions({ ...base, signal: {} }), 'ERR_INVALID_ARG_TYPE');
  });

  it('rejects (does not throw) from the async function', async () => {
    const call = announceAddress({ address: 'nope', device: 'eth0' });
    expect(call).toBeInstanceOf(Promise);
    await expect(call).rejects.toBeInstanceOf(InvalidArgumentError);
  });
});

describe('addAddress / removeAddress options', () => {
  const base = { cidr: 'fd00:77::100/64', device: 'eth0' };

  it('announce: default on, off, or with its own count and interval', () => {
    expect(checkAddressChangeOptions(base, 'addAddress')).toMatchObject({
      family: 6,
      address: 'fd00:77::100',
      announce: { count: 3, intervalMs: 100 },
    });
    expect(checkAddressChangeOptions({ ...base, announce: false }, 'addAddress').announce).toBeUndefined();
    expect(checkAddressChangeOptions({ ...base, announce: { count: 1 } }, 'addAddress').announce).toEqual({
      count: 1,
      intervalMs: 100,
    });
    invalid(() => checkAddressChangeOptions({ ...base, announce: 'yes' }, 'addAddress'), 'ERR_INVALID_ARG_TYPE');
    invalid(() => checkAddressChangeOptions({ ...base, announce: { count: 1, every: 5 } }, 'addAddress'));
    invalid(() => checkAddressChangeOptions({ ...base, announce: { count: 0 } }, 'addAddress'), 'ERR_OUT_OF_RANGE');
    // removeAddress announces nothing, so the option is unknown there.
    invalid(() => checkAddressChangeOptions({ ...base, announce: true }, 'removeAddress'));
  });

  it('checks cidr, device and netns before any command runs', async () => {
    await expect(addAddress({ ...base, cidr: '10.0.0.1/99' })).rejects.toMatchObject({ code: 'ERR_OUT_OF_RANGE' });
    await expect(removeAddress({ ...base, device: 'eth0 ' })).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(removeAddress({ ...base, netns: 'x' })).rejects.toBeInstanceOf(InvalidArgumentError);
  });
});

describe('capability hint', () => {
  it("names CAP_NET_RAW for the announcement's raw sockets", () => {
    expect(operationOfNativeFailure('EPERM', 'socket', 'socket EPERM: AF_PACKET for a gratuitous ARP')).toBe(
      'announce',
    );
    expect(operationOfNativeFailure('EPERM', 'socket', 'socket EPERM: raw ICMPv6 for a Neighbour Advertisement')).toBe(
      'announce',
    );
    expect(operationOfNativeFailure('ENODEV', 'ioctl', 'ioctl ENODEV: SIOCGIFINDEX x')).toBeUndefined();
  });
});
