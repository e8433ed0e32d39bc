/** The packet hold's table builders (lib/soccr/nft/hold-table.ts): families, keys, the bound. */
import { HOLD_PRIORITY, holdMatches, holdTableCommands } from '../../../lib/soccr/nft/hold-table';

describe('holdMatches', () => {
  it('sorts tuples (remote . port . local . port) and endpoints by the family their packets travel as', () => {
    const matches = holdMatches(
      [
        { local: { family: 4, address: '10.0.0.1', port: 80 }, remote: { family: 4, address: '10.0.0.9', port: 5000 } },
        {
          local: { family: 6, address: '::ffff:10.0.0.1', port: 80 },
          remote: { family: 6, address: '::ffff:10.0.0.8', port: 6000 },
        },
        { local: { family: 6, address: 'fd00::1', port: 443 }, remote: { family: 6, address: 'fd00::9', port: 7000 } },
      ],
      [
        { address: '10.0.0.100', port: 8080 },
        { address: 'fd00::100', port: 8443 },
      ],
    );
    expect(matches.ip).toEqual({
      tuples: [
        ['10.0.0.9', 5000, '10.0.0.1', 80],
        ['10.0.0.8', 6000, '10.0.0.1', 80],
      ],
      endpoints: [['10.0.0.100', 8080]],
    });
    expect(matches.ip6).toEqual({ tuples: [['fd00::9', 7000, 'fd00::1', 443]], endpoints: [['fd00::100', 8443]] });
  });

  it.each([
    [[{ local: null, remote: null }], [], 'ERR_INVALID_ARG_TYPE'],
    [[null], [], 'ERR_INVALID_ARG_TYPE'],
    [
      [{ local: { family: 4, address: '1.2.3.4', port: 1 }, remote: { family: 6, address: 'fd00::1', port: 1 } }],
      [],
      'ERR_INVALID_ARG_VALUE',
    ],
    [
      [{ local: { family: 4, address: '1.2.3.4', port: -1 }, remote: { family: 4, address: '1.2.3.5', port: 1 } }],
      [],
      'ERR_OUT_OF_RANGE',
    ],
    [[], [{ address: 'x', port: 1 }], 'ERR_INVALID_ARG_VALUE'],
    [[], [{ address: 5, port: 1 }], 'ERR_INVALID_ARG_TYPE'],
    [[], [{ address: '1.2.3.4', port: 65536 }], 'ERR_OUT_OF_RANGE'],
  ])('rejects %j %j with %s', (tuples, endpoints, code) => {
    expect(() => holdMatches(tuples as never, endpoints as never)).toThrow(expect.objectContaining({ code }));
  });
});

describe('holdTableCommands', () => {
  it('makes the sets, an input chain before the locks, the jumps and the byte bound; elements only when given', () => {
    const commands = holdTableCommands(
      'ip',
      'node_criu_hold_t',
      { tuples: [], endpoints: [['10.0.0.100', 8080]] },
      4096,
    );
    const text = JSON.stringify(commands);
    expect(commands[0]).toEqual({ add: { table: { family: 'ip', name: 'node_criu_hold_t' } } });
    expect(commands[1]).toEqual({
      add: {
        set: {
          family: 'ip',
          table: 'node_criu_hold_t',
          name: 'tuples',
          type: ['ipv4_addr', 'inet_service', 'ipv4_addr', 'inet_service'],
        },
      },
    });
    expect(commands[2]).toMatchObject({
      add: { set: { name: 'endpoints', elem: [{ concat: ['10.0.0.100', 8080] }] } },
    });
    expect(commands[3]).toMatchObject({ add: { chain: { name: 'input', hook: 'input', prio: HOLD_PRIORITY } } });
    expect(HOLD_PRIORITY).toBeLessThan(-310); // before the lock tables' drop chains
    expect(text).toContain('{"quota":{"val":4096,"val_unit":"bytes","inv":true}},{"counter":null},{"drop":null}');
    expect(text).toContain('"right":"@endpoints"}},{"jump":{"target":"hold"}}');
    expect(JSON.stringify(holdTableCommands('ip6', 'x', { tuples: [], endpoints: [] }, 1))).toContain('ipv6_addr');
  });
});
