/** Validation of the Criu client's own arguments (constructor, featureCheck, preDump); no I/O. */
import { describeValue, InvalidArgumentError } from '../errors';
import { checkSocketPath } from '../security';
import type { CriuMode } from './prepare';
import type { CriuFeatures } from './replies';
import type { CriuPreDumpOptions } from './sessions';

export interface CriuClientOptions {
  /** 'swrk' (default): spawn `criu swrk` per call. 'service': connect to `address`. */
  mode?: CriuMode;
  /** swrk: the criu executable (else CRIU_PATH, the install-criu.sh cache, PATH). */
  criuPath?: string;
  /** service: the path `criu service --address` listens on. */
  address?: string;
}

function checkObject(value: unknown, what: string): asserts value is object {
  if (typeof value !== 'object' || value === null)
    throw new InvalidArgumentError(`${what} must be an object`, 'ERR_INVALID_ARG_TYPE');
}

function checkKeys(value: object, known: readonly string[], what: (key: string) => string): void {
  for (const key of Object.keys(value)) if (!known.includes(key)) throw new InvalidArgumentError(what(key));
}

export function checkClientOptions(options: unknown): { mode: CriuMode; criuPath?: string; address?: string } {
  checkObject(options, 'Criu options');
  checkKeys(options, ['mode', 'criuPath', 'address'], (key) => `Criu options: unknown option '${key}'`);
  const o = options as CriuClientOptions;
  const mode = o.mode ?? 'swrk';
  if (mode !== 'swrk' && mode !== 'service')
    throw new InvalidArgumentError(`Criu options.mode must be 'swrk' or 'service', got ${describeValue(mode)}`);
  if (mode === 'service') {
    if (typeof o.address !== 'string' || o.address === '')
      throw new InvalidArgumentError("mode 'service' needs options.address (a socket path)");
    checkSocketPath(o.address, 'options.address');
    if (o.criuPath !== undefined) throw new InvalidArgumentError("options.criuPath applies to mode 'swrk' only");
    return { mode, address: o.address };
  }
  if (o.address !== undefined) throw new InvalidArgumentError("options.address applies to mode 'service' only");
  if (o.criuPath === undefined) return { mode };
  if (typeof o.criuPath !== 'string' || o.criuPath === '')
    throw new InvalidArgumentError('options.criuPath must be a non-empty string', 'ERR_INVALID_ARG_TYPE');
  return { mode, criuPath: o.criuPath };
}

const FEATURES = ['memTrack', 'lazyPages', 'pidfdStore'];

export function checkFeatures(features: unknown): asserts features is CriuFeatures {
  checkObject(features, 'features');
  checkKeys(features, FEATURES, (key) => `features.${key}: unknown feature`);
  for (const [key, value] of Object.entries(features)) {
    if (value !== undefined && typeof value !== 'boolean')
      throw new InvalidArgumentError(`features.${key} must be a boolean`, 'ERR_INVALID_ARG_TYPE');
  }
}

/** Checks preDump's own options and splits them from the CRIU options. */
export function splitPreDumpOptions(options: unknown): {
  shouldContinue?: CriuPreDumpOptions['shouldContinue'];
  maxIterations?: number;
  criuOptions: Omit<CriuPreDumpOptions, 'shouldContinue' | 'maxIterations'>;
} {
  checkObject(options, 'options');
  const { shouldContinue, maxIterations, ...criuOptions } = options as CriuPreDumpOptions;
  if (shouldContinue !== undefined && typeof shouldContinue !== 'function')
    throw new InvalidArgumentError('options.shouldContinue must be a function', 'ERR_INVALID_ARG_TYPE');
  if (maxIterations !== undefined && (!Number.isInteger(maxIterations) || maxIterations < 1 || maxIterations > 100))
    throw new InvalidArgumentError('options.maxIterations must be an integer from 1 to 100', 'ERR_OUT_OF_RANGE');
  return {
    ...(shouldContinue !== undefined ? { shouldContinue } : {}),
    ...(maxIterations !== undefined ? { maxIterations } : {}),
    criuOptions,
  };
}
