/**
 * Loads the addon and types its raw surface once. Internal: nothing outside lib/ imports this,
 * and the package root never re-exports it.
 */
import * as path from 'node:path';

import type { SeqpacketBinding } from './criu/binding-types';
import type { SoccrBinding } from './soccr/binding-types';
import type { SysBinding } from './sys/binding-types';
import type { NativeErrnoError } from './errors';

export interface CommonBinding {
  /** Builds the error csrc/errors.cc throws for `errno`, so tests can check its shape. */
  makeErrnoError(errno: number, syscall?: string): NativeErrnoError;
}

export type NativeBinding = CommonBinding & SoccrBinding & SeqpacketBinding & SysBinding;

// node-gyp-build has no type declarations: it returns the addon's exports.
const nodeGypBuild = require('node-gyp-build') as (dir: string) => unknown;

// lib/ (ts-jest) and dist/ (compiled) both sit one level below the package root.
const packageRoot = path.resolve(__dirname, '..');

/**
 * node-gyp-build prefers a local build (build/Release, then build/Debug: `npm run build:addon`, a
 * source install, the ASan copy) over prebuilds/<platform>-<arch>/ (what the packed tarball ships).
 */
function load(): NativeBinding {
  try {
    return nodeGypBuild(packageRoot) as NativeBinding;
  } catch (cause) {
    const error = new Error(
      'node-criu: cannot load the native addon; reinstall (`npm install --build-from-source` compiles it) ' +
        `or run \`npm run build:addon\`.\n${(cause as Error).message}`,
      { cause },
    ) as NodeJS.ErrnoException;
    error.code = 'ERR_NODE_CRIU_ADDON_MISSING';
    throw error;
  }
}

let cached: NativeBinding | undefined;

export function binding(): NativeBinding {
  cached ??= load();
  return cached;
}
