'use strict';
/**
 * autocannon against the migrated node:http server (run inside the clients' namespace by
 * bench/http-migration-bench.js). Config: JSON in argv[2]: { statusDir, host, port, connections,
 * durationSec }. Writes statusDir/autocannon.json with the latency figures (ms), request and
 * error counts.
 */
const fs = require('node:fs');
const path = require('node:path');

const autocannon = require('autocannon');

const config = JSON.parse(process.argv[2]);
autocannon(
  {
    url: `http://${config.host}:${config.port}/`,
    connections: config.connections,
    pipelining: 1,
    duration: config.durationSec,
    timeout: 30,
  },
  (error, result) => {
    const out = error
      ? { error: String(error.message ?? error) }
      : {
          max: result.latency.max,
          p99: result.latency.p99,
          p50: result.latency.p50,
          requests: result.requests.total,
          errors: result.errors,
          timeouts: result.timeouts,
          non2xx: result.non2xx,
          resets: result.resets ?? 0,
        };
    const file = path.join(config.statusDir, 'autocannon.json');
    fs.writeFileSync(`${file}.tmp`, JSON.stringify(out));
    fs.renameSync(`${file}.tmp`, file);
  },
);
