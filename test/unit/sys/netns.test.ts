/** lib/sys/netns.ts without root: the paths and nsenter arguments it builds. */
import {
  namedNetnsPath,
  nsenterArgs,
  OWN_NETNS,
  parseNamespaceLink,
  pidNamespacePath,
  sameNamespace,
} from '../../../lib/sys/netns';

describe('namespace paths', () => {
  it('builds /proc and /run/netns paths', () => {
    expect(OWN_NETNS).toBe('/proc/self/ns/net');
    expect(pidNamespacePath(42)).toBe('/proc/42/ns/net');
    expect(pidNamespacePath('self', 'time')).toBe('/proc/self/ns/time');
    expect(namedNetnsPath('ncrdemo-1-ab-a')).toBe('/run/netns/ncrdemo-1-ab-a');
  });

  it('refuses names ip netns would not make', () => {
    for (const bad of ['', '..', 'a/b', '../etc', '.hidden', 'a b', 'x'.repeat(256)])
      expect(() => namedNetnsPath(bad)).toThrow(RangeError);
  });

  it('nsenter arguments end the options before the command', () => {
    expect(nsenterArgs('/run/netns/x', 'nft', ['-j', 'list', 'tables'])).toEqual([
      '--net=/run/netns/x',
      '--',
      'nft',
      '-j',
      'list',
      'tables',
    ]);
  });

  it('reads a namespace link and compares identities', () => {
    expect(parseNamespaceLink('net:[4026531840]')).toBe(4026531840);
    expect(parseNamespaceLink('time_for_children:[4026531834]')).toBe(4026531834);
    expect(() => parseNamespaceLink('/run/netns/x')).toThrow(RangeError);
    expect(sameNamespace({ dev: 4, ino: 7 }, { dev: 4, ino: 7 })).toBe(true);
    expect(sameNamespace({ dev: 4, ino: 7 }, { dev: 5, ino: 7 })).toBe(false);
  });
});
