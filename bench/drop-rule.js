'use strict';
/**
 * The nft batch of a plain drop lock for the benches' baselines: table `ip <name>`, an input
 * chain at the lock tables' priority (-310) dropping TCP packets to `port` (and `address`).
 */
module.exports = function dropTableCommands(name, { address, port }) {
  const table = { family: 'ip', table: name };
  const match = (protocol, field, right) => ({ match: { op: '==', left: { payload: { protocol, field } }, right } });
  return [
    { add: { table: { family: 'ip', name } } },
    { add: { chain: { ...table, name: 'input', type: 'filter', hook: 'input', prio: -310, policy: 'accept' } } },
    {
      add: {
        rule: {
          ...table,
          chain: 'input',
          expr: [...(address ? [match('ip', 'daddr', address)] : []), match('tcp', 'dport', port), { drop: null }],
        },
      },
    },
  ];
};
