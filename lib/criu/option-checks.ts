/** Checks of option values, for lib/criu/options.ts. Each throws InvalidArgumentError naming the option. */
import { describeValue, InvalidArgumentError } from '../errors';

export const INT32_MAX = 0x7fffffff;
export const UINT32_MAX = 0xffffffff;

export type Check = (value: unknown, where: string) => void;

export function fail(
  where: string,
  message: string,
  code: 'ERR_INVALID_ARG_TYPE' | 'ERR_INVALID_ARG_VALUE' | 'ERR_OUT_OF_RANGE',
): never {
  throw new InvalidArgumentError(`${where === '' ? 'options' : `options.${where}`} ${message}`, code);
}

export function checkBool(value: unknown, where: string): void {
  if (typeof value !== 'boolean') fail(where, `must be a boolean, got ${typeof value}`, 'ERR_INVALID_ARG_TYPE');
}

/** A C string CRIU will read: non-empty, no NUL. */
export function checkText(value: unknown, where: string): void {
  if (typeof value !== 'string') fail(where, `must be a string, got ${typeof value}`, 'ERR_INVALID_ARG_TYPE');
  if (value === '') fail(where, 'must not be empty', 'ERR_INVALID_ARG_VALUE');
  if (value.includes('\0')) fail(where, 'must not contain NUL', 'ERR_INVALID_ARG_VALUE');
}

export function checkInt(value: unknown, where: string, min: number, max: number): void {
  if (typeof value !== 'number' || !Number.isInteger(value))
    fail(where, `must be an integer, got ${describeValue(value)}`, 'ERR_INVALID_ARG_TYPE');
  if (value < min || value > max) fail(where, `must be in ${min}..${max}, got ${value}`, 'ERR_OUT_OF_RANGE');
}

export function checkFd(value: unknown, where: string): void {
  checkInt(value, where, 0, INT32_MAX);
}

export function checkArray(value: unknown, where: string, each: Check): void {
  if (!Array.isArray(value)) fail(where, 'must be an array', 'ERR_INVALID_ARG_TYPE');
  // An index loop: forEach skips the holes of a sparse array ([, 'x']), which would then reach
  // the encoder as undefined.
  for (let index = 0; index < value.length; index++) each(value[index], `${where}[${index}]`);
}

export function checkEnum(value: unknown, where: string, names: Record<string, number>): void {
  if (typeof value !== 'string') fail(where, `must be a string, got ${typeof value}`, 'ERR_INVALID_ARG_TYPE');
  if (!Object.prototype.hasOwnProperty.call(names, value)) {
    fail(
      where,
      `must be one of ${Object.keys(names)
        .map((n) => `'${n}'`)
        .join(', ')}, got '${describeValue(value)}'`,
      'ERR_INVALID_ARG_VALUE',
    );
  }
}

function join(where: string, key: string): string {
  return where === '' ? key : `${where}.${key}`;
}

/** A plain object whose keys are all in `allowed`, with `required` keys present. */
export function checkRecord(
  value: unknown,
  where: string,
  allowed: readonly string[],
  required: readonly string[] = [],
): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    fail(where, 'must be an object', 'ERR_INVALID_ARG_TYPE');
  const record = value as Record<string, unknown>;
  for (const key of Object.keys(record)) {
    if (record[key] !== undefined && !allowed.includes(key))
      fail(join(where, key), 'is not a known option', 'ERR_INVALID_ARG_VALUE');
  }
  for (const key of required)
    if (record[key] === undefined) fail(join(where, key), 'is required', 'ERR_INVALID_ARG_VALUE');
  return record;
}

export function checkResolvedFd(value: unknown, where: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > INT32_MAX) {
    throw new InvalidArgumentError(
      `resolved.${where} must be an fd number, got ${describeValue(value)}`,
      'ERR_INVALID_ARG_VALUE',
    );
  }
  return value;
}
