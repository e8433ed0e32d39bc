'use strict';
/**
 * Runs an example inside a network namespace of its own (`unshare --net`, loopback up), so its
 * locks, sockets and CRIU's nftables tables never touch the host's network; the namespace goes away
 * with the example's last process. Needs root. The example's file calls inPrivateNetns(main).
 */
const { spawnSync } = require('node:child_process');

const MARK = 'NODE_CRIU_EXAMPLE_NETNS';

function inPrivateNetns(main) {
  if (process.env[MARK] === String(process.pid)) {
    main().then(
      (code) => process.exit(code ?? 0),
      (error) => {
        console.error(error);
        process.exit(1);
      },
    );
    return;
  }
  if (process.getuid?.() !== 0) {
    console.error('run this example as root (sudo): TCP_REPAIR, nftables and CRIU need it');
    process.exit(3);
  }
  // sh execs node, so $$ is the pid the example runs with inside the namespace.
  const script = `ip link set lo up && ${MARK}=$$ exec "$0" "$@"`;
  const result = spawnSync('unshare', ['--net', '--', 'sh', '-c', script, process.execPath, ...process.argv.slice(1)], {
    stdio: 'inherit',
  });
  process.exit(result.status ?? 1);
}

module.exports = { inPrivateNetns };
