/** The libsoccr half's view of the addon, with libsoccr's log routed to util.debuglog. */
import { debuglog } from 'node:util';

import { describeValue, InvalidArgumentError } from '../errors';
import { binding } from '../native';
import type { SoccrBinding } from './binding-types';

const debug = debuglog('node-criu');

export type SoccrLogger = (level: 'error' | 'debug', line: string) => void;

let installed = false;
let userLogger: SoccrLogger | undefined;
let userLevel: 0 | 1 | 2 = 0;

function route(): void {
  const level = Math.max(userLevel, debug.enabled ? 2 : 0) as 0 | 1 | 2;
  binding().setSoccrLog(
    level,
    level === 0
      ? undefined
      : (lineLevel: number, line: string) => {
          const name = lineLevel <= 1 ? 'error' : 'debug';
          if (debug.enabled) debug('libsoccr %s: %s', name, line);
          if (userLogger && lineLevel <= userLevel) userLogger(name, line);
        },
  );
}

/** The addon, with the log routing installed on first use (NODE_DEBUG=node-criu shows libsoccr). */
export function soccrBinding(): SoccrBinding {
  if (!installed) {
    installed = true;
    route();
  }
  return binding();
}

/**
 * Sends libsoccr's log lines of this thread's calls to `logger` ('error' lines, plus 'debug' lines
 * with level 'debug'); undefined removes it. libsoccr's level is process-global, so a debug level
 * here also makes libsoccr format debug lines for other threads (they are dropped there).
 */
export function setLogger(logger: SoccrLogger | undefined, level: 'error' | 'debug' = 'error'): void {
  if (logger !== undefined && typeof logger !== 'function')
    throw new InvalidArgumentError('logger must be a function or undefined', 'ERR_INVALID_ARG_TYPE');
  if (level !== 'error' && level !== 'debug')
    throw new InvalidArgumentError(`level must be 'error' or 'debug' (got ${describeValue(level)})`);
  userLogger = logger;
  userLevel = logger ? (level === 'debug' ? 2 : 1) : 0;
  installed = true;
  route();
}
