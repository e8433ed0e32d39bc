// Used by binding.gyp only: resolves NODE_CRIU_LIBSOCCR=<dir>, the switch that links an external
// libsoccr (CRIU's, GPLv2) instead of this directory's. Prints nothing when the variable is unset.
//   node external-libsoccr.js dir       -> absolute <dir>
//   node external-libsoccr.js lib       -> <dir>/libsoccr.a or <dir>/soccr/libsoccr.a
//   node external-libsoccr.js includes  -> include dirs: external/ here (a soccr.h wrapping
//                                          CRIU's in extern "C" for C++), the one holding
//                                          soccr.h, and CRIU's generated include/common and
//                                          include (soccr.h includes common/config.h)
'use strict';
const fs = require('fs');
const path = require('path');

const env = process.env.NODE_CRIU_LIBSOCCR;
if (!env) process.exit(0);
const dir = path.resolve(env);
const fail = (msg) => {
  process.stderr.write(`NODE_CRIU_LIBSOCCR=${env}: ${msg}\n`);
  process.exit(1);
};
const first = (candidates) => candidates.map((c) => path.join(dir, c)).find((p) => fs.existsSync(p));

switch (process.argv[2]) {
  case 'dir':
    process.stdout.write(dir);
    break;
  case 'lib': {
    const lib = first(['libsoccr.a', 'soccr/libsoccr.a']);
    if (!lib) fail('no libsoccr.a or soccr/libsoccr.a (in a CRIU tree: make soccr/libsoccr.a)');
    process.stdout.write(lib);
    break;
  }
  case 'includes': {
    const header = first(['soccr.h', 'soccr/soccr.h']);
    if (!header) fail('no soccr.h or soccr/soccr.h');
    const dirs = [path.join(__dirname, 'external'), path.dirname(header)];
    for (const extra of ['include/common', 'include']) {
      if (fs.existsSync(path.join(dir, extra))) dirs.push(path.join(dir, extra));
    }
    process.stdout.write(dirs.join('\n'));
    break;
  }
  default:
    fail(`unknown query ${process.argv[2]}`);
}
