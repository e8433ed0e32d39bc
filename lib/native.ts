/**
 * Loads the addon and types its raw surface once. Internal: nothing outside lib/ imports this,
 * and the package root never re-exports it.
 */
import * as path from 'node:path';

import type { SeqpacketBinding } from './criu/binding-types';
import type { SoccrBinding } from './soccr/binding-types';
import type { NativeErrnoError } from './errors';

export interface CommonBinding {
  /** Builds the error csrc/errors.cc throws for `errno`, so tests can check its shape. */
  makeErrnoError(errno: number, syscall?: string): NativeErrnoError;
}

export type NativeBinding = CommonBinding & SoccrBinding & SeqpacketBinding;

// lib/ (ts-jest) and dist/ (compiled) both sit one level below the package root.
const packageRoot = path.resolve(__dirname, '..');
const candidates = [
  path.join(packageRoot, 'build', 'Release', 'node_criu.node'),
  path.join(packageRoot, 'build', 'Debug', 'node_criu.node'),
];

function load(): NativeBinding {
  const failures: string[] = [];
  for (const candidate of candidates) {
    try {
      return require(candidate) as NativeBinding;
    } catch (error) {
      const e = error as NodeJS.ErrnoException;
      failures.push(`${candidate}: ${e.code ?? ''} ${e.message}`);
    }
  }
  const error = new Error(
    `node-criu: cannot load the native addon; run \`npm install\` (node-gyp rebuild) first.\n${failures.join('\n')}`,
  ) as NodeJS.ErrnoException;
  error.code = 'ERR_NODE_CRIU_ADDON_MISSING';
  throw error;
}

let cached: NativeBinding | undefined;

export function binding(): NativeBinding {
  cached ??= load();
  return cached;
}
