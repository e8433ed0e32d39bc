/**
 * The suite runs against the real kernel and real CRIU: TCP_REPAIR needs CAP_NET_ADMIN, CRIU and
 * network namespaces need root. Without root the suite fails loudly instead of skipping.
 *
 * It also refuses to run in the host's network namespace: what tests do to the namespace they run
 * in (checkpointConnection's nftables lock table, sockets) must never reach the host's firewall.
 * `npm test` and `bash scripts/jest-isolated.sh [jest args]` run jest in a private one.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';

/**
 * Namespaces a killed earlier run left behind (test/helpers/netns.ts names them
 * ncr-<pid>-<rand>-<label>, the benches ncr-bench-<pid>-<label>): deleted when that pid is gone,
 * so interrupted runs do not pile up. Only our own naming scheme is touched.
 */
function sweepStaleNamespaces(): void {
  let names: string[];
  try {
    names = fs.readdirSync('/run/netns');
  } catch {
    return;
  }
  for (const name of names) {
    const match = /^ncr-(?:bench-)?(\d+)-/.exec(name);
    if (match === null || fs.existsSync(`/proc/${match[1]}`)) continue;
    try {
      execFileSync('ip', ['netns', 'delete', name], { stdio: 'ignore' });
    } catch {
      // someone else removed it meanwhile
    }
  }
}

export default function globalSetup(): void {
  if (process.platform !== 'linux') throw new Error('node-criu is Linux only');
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new Error('node-criu tests must run as root (TCP_REPAIR, CRIU and network namespaces need it)');
  }
  // A private namespace made for the run has nothing but loopback; the host's always has more.
  // (/proc/self/net/dev lists the caller's namespace; /proc/1/ns/net is not readable here.)
  const interfaces = fs
    .readFileSync('/proc/self/net/dev', 'utf8')
    .split('\n')
    .slice(2)
    .map((line) => line.split(':')[0].trim())
    .filter(Boolean);
  if (interfaces.some((name) => name !== 'lo')) {
    throw new Error(
      `node-criu tests must not run in the host network namespace (it has ${interfaces.join(', ')}); ` +
        'use `npm test` or `bash scripts/jest-isolated.sh [jest args]`, which run jest in a private one',
    );
  }
  sweepStaleNamespaces();
}
