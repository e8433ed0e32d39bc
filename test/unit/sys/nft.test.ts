/** lib/sys/nft.ts without root or nft: parsing nft's JSON output and building JSON batches. */
import {
  batchText,
  copyTableCommands,
  counterOf,
  deleteTableCommand,
  parseNftJson,
  setElementsOf,
  tablesOf,
} from '../../../lib/sys/nft';
import { lockTableCommands } from '../../../lib/soccr/nft/lock';

const META = { metainfo: { version: '1.0.6', release_name: 'Lester Gooch #5', json_schema_version: 1 } };
const doc = (...objects: unknown[]) => JSON.stringify({ nftables: [META, ...objects] });

describe('parseNftJson', () => {
  it('drops the metainfo; empty output is no objects', () => {
    expect(parseNftJson(doc({ table: { family: 'inet', name: 't', handle: 1 } }))).toEqual([
      { table: { family: 'inet', name: 't', handle: 1 } },
    ]);
    expect(parseNftJson('')).toEqual([]);
    expect(parseNftJson('\n')).toEqual([]);
  });

  it('throws on anything that is not nft JSON', () => {
    expect(() => parseNftJson('table inet t')).toThrow(SyntaxError);
    expect(() => parseNftJson('{"tables": []}')).toThrow(TypeError);
    expect(() => parseNftJson('null')).toThrow(TypeError);
  });
});

describe('tablesOf', () => {
  it('lists every family, skips malformed entries and other objects', () => {
    const objects = parseNftJson(
      doc(
        { table: { family: 'inet', name: 'node_criu_1_ab', handle: 1 } },
        { table: { family: 'ip', name: 'nat', handle: 2 } },
        { table: { family: 'inet' } },
        { chain: { family: 'inet', table: 'x', name: 'input' } },
      ),
    );
    expect(tablesOf(objects)).toEqual([
      { family: 'inet', name: 'node_criu_1_ab' },
      { family: 'ip', name: 'nat' },
    ]);
  });
});

describe('setElementsOf', () => {
  it('reads concatenations, plain values and elements with options', () => {
    const set = {
      family: 'inet',
      name: 'conns4',
      table: 'CRIU-1',
      type: ['ipv4_addr', 'inet_service', 'ipv4_addr', 'inet_service'],
      handle: 1,
      elem: [
        { concat: ['127.0.0.1', 40000, '127.0.0.1', 5000] },
        { elem: { val: { concat: ['10.0.0.1', 1, 'fd00::1', 2] }, timeout: 30 } },
        '192.0.2.1',
        { range: ['1', '2'] },
      ],
    };
    expect(setElementsOf(parseNftJson(doc({ set })))).toEqual([
      ['127.0.0.1', 40000, '127.0.0.1', 5000],
      ['10.0.0.1', 1, 'fd00::1', 2],
      ['192.0.2.1'],
    ]);
  });

  it('an empty set (no elem field) has none', () => {
    expect(setElementsOf(parseNftJson(doc({ set: { family: 'inet', name: 'v4', table: 't' } })))).toEqual([]);
    expect(setElementsOf([])).toEqual([]);
  });

  it('picks the named set of a whole-table listing; a table without that set has none', () => {
    const table = { family: 'inet', name: 'CRIU-1', handle: 1 };
    const conns6 = { family: 'inet', name: 'conns6', table: 'CRIU-1', elem: [{ concat: ['::1', 1, '::1', 2] }] };
    const conns4 = {
      family: 'inet',
      name: 'conns4',
      table: 'CRIU-1',
      elem: [{ concat: ['10.0.0.1', 1, '10.0.0.2', 2] }],
    };
    const listing = parseNftJson(doc({ table }, { set: conns6 }, { set: conns4 }));
    expect(setElementsOf(listing, 'conns4')).toEqual([['10.0.0.1', 1, '10.0.0.2', 2]]);
    expect(setElementsOf(listing, 'conns6')).toEqual([['::1', 1, '::1', 2]]);
    expect(setElementsOf(parseNftJson(doc({ table })), 'conns4')).toEqual([]);
  });
});

describe('counterOf', () => {
  it('reads packets and bytes', () => {
    const counter = { family: 'inet', name: 'rst_out', table: 't', handle: 2, packets: 7, bytes: 420 };
    expect(counterOf(parseNftJson(doc({ counter })))).toEqual({ packets: 7, bytes: 420 });
    expect(counterOf([])).toBeUndefined();
  });
});

describe('batches', () => {
  it('deleteTableCommand and batchText', () => {
    expect(batchText([deleteTableCommand({ family: 'inet', name: 'x' })])).toBe(
      '{"nftables":[{"delete":{"table":{"family":"inet","name":"x"}}}]}',
    );
  });

  it('copyTableCommands renames the table everywhere and drops the handles', () => {
    const listed = parseNftJson(
      doc(
        { table: { family: 'inet', name: 'CRIU-1', handle: 9 } },
        { set: { family: 'inet', name: 'conns4', table: 'CRIU-1', handle: 1, elem: [{ concat: ['a', 1, 'b', 2] }] } },
        { chain: { family: 'inet', table: 'CRIU-1', name: 'output', handle: 2, hook: 'output', prio: 0 } },
        { rule: { family: 'inet', table: 'CRIU-1', chain: 'output', handle: 3, expr: [{ drop: null }] } },
      ),
    );
    expect(copyTableCommands(listed, 'hold')).toEqual([
      { add: { table: { family: 'inet', name: 'hold' } } },
      { add: { set: { family: 'inet', name: 'conns4', table: 'hold', elem: [{ concat: ['a', 1, 'b', 2] }] } } },
      { add: { chain: { family: 'inet', table: 'hold', name: 'output', hook: 'output', prio: 0 } } },
      { add: { rule: { family: 'inet', table: 'hold', chain: 'output', expr: [{ drop: null }] } } },
    ]);
  });

  it("copyTableCommands with hooks copies only those hooks' chains and their rules (a lock's input side)", () => {
    const listed = parseNftJson(
      doc(
        { table: { family: 'inet', name: 'CRIU-1', handle: 9 } },
        { set: { family: 'inet', name: 'conns4', table: 'CRIU-1', handle: 1 } },
        { chain: { family: 'inet', table: 'CRIU-1', name: 'output', handle: 2, hook: 'output', prio: 0 } },
        { chain: { family: 'inet', table: 'CRIU-1', name: 'input', handle: 3, hook: 'input', prio: 0 } },
        { rule: { family: 'inet', table: 'CRIU-1', chain: 'output', handle: 4, expr: [{ drop: null }] } },
        { rule: { family: 'inet', table: 'CRIU-1', chain: 'input', handle: 5, expr: [{ drop: null }] } },
      ),
    );
    expect(copyTableCommands(listed, 'hold', { hooks: ['input'] })).toEqual([
      { add: { table: { family: 'inet', name: 'hold' } } },
      { add: { set: { family: 'inet', name: 'conns4', table: 'hold' } } },
      { add: { chain: { family: 'inet', table: 'hold', name: 'input', hook: 'input', prio: 0 } } },
      { add: { rule: { family: 'inet', table: 'hold', chain: 'input', expr: [{ drop: null }] } } },
    ]);
  });

  it("the lock table's batch: two 4-tuple sets, a drop chain that lets SOCCR_MARK through", () => {
    const commands = lockTableCommands('node_criu_1_ab') as Array<{ add: Record<string, Record<string, unknown>> }>;
    const kinds = commands.map((c) => Object.keys(c.add)[0]);
    expect(kinds).toEqual(['table', 'set', 'set', 'chain', 'rule', 'rule', 'rule']);
    for (const command of commands.slice(1)) expect(Object.values(command.add)[0].table).toBe('node_criu_1_ab');
    expect(commands[3].add.chain).toMatchObject({ hook: 'input', prio: -310, policy: 'accept' });
    expect(JSON.stringify(commands[4])).toContain('"right":49428');
    expect(JSON.stringify(commands[5])).toContain('"right":"@v4"');
    expect(JSON.stringify(commands[6])).toContain('"right":"@v6"');
  });
});
