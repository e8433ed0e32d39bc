/**
 * The `ws` module, loaded on first use: node-criu works without it, and only node-criu/ws needs it.
 * The two internal modules used here (permessage-deflate, extension) are found next to ws's main
 * file, as ws's package `exports` does not list them.
 */
import * as path from 'node:path';

import type * as Ws from 'ws';

import { WebSocketHandoverError } from './errors';

let loaded: typeof Ws | undefined;

export function wsModule(): typeof Ws {
  if (loaded) return loaded;
  try {
    loaded = require('ws') as typeof Ws;
  } catch (error) {
    throw new WebSocketHandoverError(
      'node-criu/ws needs the `ws` package (npm install ws)',
      'ERR_WS_NOT_INSTALLED',
      undefined,
      error,
    );
  }
  return loaded;
}

/** ws's PerMessageDeflate class (lib/permessage-deflate.js), for a carried negotiation. */
export interface PerMessageDeflateLike {
  params: Record<string, unknown> | null;
}
type PerMessageDeflateClass = new (options: Record<string, unknown>) => PerMessageDeflateLike;

export function perMessageDeflateClass(): PerMessageDeflateClass {
  wsModule();
  const file = path.join(path.dirname(require.resolve('ws')), 'lib', 'permessage-deflate.js');
  try {
    const PerMessageDeflate = require(file) as PerMessageDeflateClass & { extensionName?: string };
    if (typeof PerMessageDeflate !== 'function' || PerMessageDeflate.extensionName !== 'permessage-deflate')
      throw new Error('not the PerMessageDeflate class');
    return PerMessageDeflate;
  } catch (error) {
    throw new WebSocketHandoverError(
      `this ws version has no lib/permessage-deflate.js: ${(error as Error).message}`,
      'ERR_WS_INTERNALS',
      undefined,
      error,
    );
  }
}
