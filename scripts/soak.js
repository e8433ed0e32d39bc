#!/usr/bin/env node
'use strict';
/**
 * The soak of issue 6 (run through scripts/soak.sh, i.e. `npm run soak`, which isolates it in a
 * private network namespace and builds dist/ first):
 *   (a) one connection streaming at full speed both ways, checkpointed and restored --cycles
 *       times in a row (every --netns-every-th restore into the other namespace);
 *   (b) a server with --connections connections migrated --moves times back and forth between two
 *       network namespaces with migrateProcess (CRIU), its clients streaming both ways throughout.
 * The soaks themselves are test/soak/connection-soak.ts and server-soak.ts, the same code the short
 * versions in `npm test` run (test/soak/*.test.ts); TypeScript is compiled on load here the way
 * ts-jest does it. Prints a markdown table (machine, date, counts, bytes, hashes, RSTs, time, pause
 * per move) and exits 1 on any failure, 130 when interrupted. Everything it made (namespaces,
 * nftables tables, processes, temporary directories) is removed on the way out, also on
 * SIGINT/SIGTERM; a second signal removes the namespaces and their processes at once.
 *
 * Usage: node scripts/soak.js [--cycles 1000] [--netns-every 10] [--connections 1000] [--moves 20]
 *                             [--only connection|server]
 * SOAK_DEBUG=1 logs every cycle of (a); SOAK_KEEP_FAILED=<dir> keeps a failed move's images and
 * CRIU logs (copied there before the temporary directory goes).
 */
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const ts = require('typescript');

// The library itself is loaded from dist/ (soak.sh builds it first): its generated protobuf types
// declare enums that a transpile-only compile leaves without values.
const path = require('node:path');
const LIB = path.join(__dirname, '..', 'lib') + path.sep;
const DIST = path.join(__dirname, '..', 'dist') + path.sep;

// Compile the soak's own .ts on require (transpile only; `npm run typecheck` checks the types).
require.extensions['.ts'] = (module, filename) => {
  if (filename.startsWith(LIB)) {
    module.exports = require(DIST + filename.slice(LIB.length).replace(/\.ts$/, '.js'));
    return;
  }
  const { outputText } = ts.transpileModule(fs.readFileSync(filename, 'utf8'), {
    fileName: filename,
    compilerOptions: {
      module: ts.ModuleKind.CommonJS,
      target: ts.ScriptTarget.ES2022,
      esModuleInterop: true,
      inlineSourceMap: true,
    },
  });
  module._compile(outputText, filename);
};

const { runConnectionSoak } = require('../test/soak/connection-soak');
const { runServerSoak } = require('../test/soak/server-soak');
const { soakReport, soakPassed } = require('../test/soak/soak-table');

function parseArgs(argv) {
  const options = { cycles: 1000, netnsEvery: 10, connections: 1000, moves: 20, only: undefined };
  const names = {
    '--cycles': 'cycles',
    '--netns-every': 'netnsEvery',
    '--connections': 'connections',
    '--moves': 'moves',
  };
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (flag === '--only' && (value === 'connection' || value === 'server')) options.only = value;
    else if (names[flag] !== undefined && /^\d+$/.test(value ?? '')) options[names[flag]] = Number(value);
    else throw new Error(`soak: bad argument ${flag} ${value ?? ''} (see the usage in scripts/soak.js)`);
  }
  return options;
}

/** Namespaces this process made (NetnsLab names them ncr-<pid>-...), with their processes. */
function removeOwnNamespaces() {
  let names;
  try {
    names = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
      .split('\n')
      .map((line) => line.split(' ')[0])
      .filter((name) => name.startsWith(`ncr-${process.pid}-`));
  } catch {
    return [];
  }
  for (const name of names) {
    try {
      for (const pid of execFileSync('ip', ['netns', 'pids', name], { encoding: 'utf8' }).split('\n').filter(Boolean))
        process.kill(Number(pid), 'SIGKILL');
    } catch {
      // gone already
    }
    try {
      execFileSync('ip', ['netns', 'delete', name], { stdio: 'ignore' });
    } catch {
      // gone already
    }
  }
  return names;
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  const controller = new AbortController();
  let signals = 0;
  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.on(signal, () => {
      signals++;
      if (signals === 1) {
        process.stderr.write(`soak: ${signal}: stopping and cleaning up (again to force)\n`);
        controller.abort(new Error(signal));
      } else {
        removeOwnNamespaces();
        process.exit(130);
      }
    });
  }
  const log = (line) => process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${line}\n`);
  const started = new Date();
  const results = [];
  if (options.only !== 'server') {
    log(`connection soak: ${options.cycles} cycles, every ${options.netnsEvery}th into the other namespace`);
    results.push(
      await runConnectionSoak({
        cycles: options.cycles,
        netnsEvery: options.netnsEvery,
        signal: controller.signal,
        log,
      }),
    );
  }
  if (options.only !== 'connection' && !controller.signal.aborted) {
    log(`server soak: ${options.connections} connections, ${options.moves} moves`);
    results.push(
      await runServerSoak({ connections: options.connections, moves: options.moves, signal: controller.signal, log }),
    );
  }
  const left = removeOwnNamespaces();
  for (const line of soakReport(results, started)) console.log(line);
  if (left.length > 0) console.log(`- left behind and removed now: namespaces ${left.join(', ')}`);
  if (controller.signal.aborted) return 130;
  return results.every(soakPassed) && left.length === 0 ? 0 : 1;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (error) => {
    removeOwnNamespaces();
    console.error(`soak failed: ${error.stack ?? error}`);
    process.exitCode = 1;
  },
);
