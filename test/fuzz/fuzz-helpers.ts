/**
 * Shared pieces of the property tests (fast-check): byte mutators that start from valid
 * encodings, the "only typed errors" check, and a tally of executions printed at the end.
 *
 * Budget: every property runs a fixed number of cases (no time-based stop, so a run is
 * reproducible from its seed). FUZZ_RUNS_SCALE multiplies the counts for longer local runs.
 */
import * as fs from 'node:fs';

import * as fc from 'fast-check';

import { NodeCriuError } from '../../lib/errors';

/** Multiplier for every numRuns (default 1; e.g. FUZZ_RUNS_SCALE=20 for a long local run). */
export const RUNS_SCALE = Math.max(1, Number(process.env.FUZZ_RUNS_SCALE ?? '1') || 1);

export function runs(base: number): number {
  return Math.round(base * RUNS_SCALE);
}

/** Executions per property, printed by printTally() (the report quotes these). */
const tally = new Map<string, number>();

export function count(property: string): void {
  tally.set(property, (tally.get(property) ?? 0) + 1);
}

export function printTally(file: string): void {
  const total = [...tally.values()].reduce((a, b) => a + b, 0);
  const lines = [...tally.entries()].map(([name, n]) => `  ${String(n).padStart(7)}  ${name}`);
  // One block on stdout (jest shows it once per file); FUZZ_TALLY_FILE collects them for scripts.
  const text = `fuzz executions (${file}): ${total} total\n${lines.join('\n')}\n`;
  process.stdout.write(text);
  if (process.env.FUZZ_TALLY_FILE) fs.appendFileSync(process.env.FUZZ_TALLY_FILE, text);
}

/** What a public function may throw: a NodeCriuError with a non-empty string code. */
export function isTypedError(error: unknown): error is NodeCriuError {
  return error instanceof NodeCriuError && typeof error.code === 'string' && error.code.length > 0;
}

/** Re-throws anything that is not a typed error, with the value that caused it. */
export function expectTyped(error: unknown, input: unknown): asserts error is NodeCriuError {
  if (!isTypedError(error)) {
    const shown = error instanceof Error ? `${error.name}: ${error.message}\n${error.stack ?? ''}` : String(error);
    throw new Error(`untyped error for input ${fc.stringify(input).slice(0, 400)}:\n${shown}`);
  }
}

/** Runs fn; returns its result or the typed error it threw (anything else fails the property). */
export function typedOutcome<T>(
  fn: () => T,
  input: unknown,
): { ok: true; value: T } | { ok: false; error: NodeCriuError } {
  try {
    return { ok: true, value: fn() };
  } catch (error) {
    expectTyped(error, input);
    return { ok: false, error };
  }
}

export async function typedOutcomeAsync<T>(
  fn: () => Promise<T>,
  input: unknown,
): Promise<{ ok: true; value: T } | { ok: false; error: NodeCriuError }> {
  try {
    return { ok: true, value: await fn() };
  } catch (error) {
    expectTyped(error, input);
    return { ok: false, error };
  }
}

// ---------------------------------------------------------------------------------------------
// Byte mutations

function encodeVarint(value: number): number[] {
  const out: number[] = [];
  let v = value >>> 0;
  // Values above 2^32 are written as 10-byte varints (what a negative int32 looks like).
  if (value < 0 || value > 0xffffffff) return [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
  while (v >= 0x80) {
    out.push((v & 0x7f) | 0x80);
    v >>>= 7;
  }
  out.push(v);
  return out;
}

/** Offsets of the length varints of length-delimited fields (recursing into what parses). */
export function lengthFields(
  bytes: Uint8Array,
  start = 0,
  end = bytes.length,
  depth = 0,
): { at: number; size: number; value: number }[] {
  const found: { at: number; size: number; value: number }[] = [];
  const varint = (pos: number): [number, number] | undefined => {
    let value = 0;
    for (let i = 0; i < 10 && pos + i < end; i++) {
      const b = bytes[pos + i];
      if (i < 5) value = (value | ((b & 0x7f) << (7 * i))) >>> 0;
      if ((b & 0x80) === 0) return [value, i + 1];
    }
    return undefined;
  };
  let pos = start;
  while (pos < end) {
    const tag = varint(pos);
    if (!tag) break;
    pos += tag[1];
    const wire = tag[0] & 7;
    if (wire === 0) {
      const v = varint(pos);
      if (!v) break;
      pos += v[1];
    } else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else if (wire === 2) {
      const len = varint(pos);
      if (!len || pos + len[1] + len[0] > end) break;
      found.push({ at: pos, size: len[1], value: len[0] });
      if (depth < 3) found.push(...lengthFields(bytes, pos + len[1], pos + len[1] + len[0], depth + 1));
      pos += len[1] + len[0];
    } else break;
  }
  return found;
}

export type Mutation =
  | { kind: 'flip'; at: number; bit: number }
  | { kind: 'truncate'; at: number }
  | { kind: 'insert'; at: number; bytes: Uint8Array }
  | { kind: 'delete'; at: number; length: number }
  | { kind: 'overwrite'; at: number; bytes: Uint8Array }
  | { kind: 'splice'; at: number; other: number; from: number; length: number }
  | { kind: 'length'; which: number; value: number };

const interestingLengths = [0, 1, 2, 0x7f, 0x80, 0x3fff, 0x4000, 0x7fffffff, 0x80000000, 0xffffffff, -1];

export const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }) },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('insert' as const),
      at: fc.nat(),
      bytes: fc.uint8Array({ minLength: 1, maxLength: 12 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('delete' as const),
      at: fc.nat(),
      length: fc.integer({ min: 1, max: 16 }),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('overwrite' as const),
      at: fc.nat(),
      bytes: fc.uint8Array({ minLength: 1, maxLength: 10 }),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('splice' as const),
      at: fc.nat(),
      other: fc.nat(),
      from: fc.nat(),
      length: fc.integer({ min: 0, max: 64 }),
    }),
  },
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant('length' as const),
      which: fc.nat(),
      value: fc.oneof(fc.constantFrom(...interestingLengths), fc.integer({ min: 0, max: 300 })),
    }),
  },
);

/** Applies the mutations in order; `others` are further valid encodings for splices. */
export function mutate(
  base: Uint8Array,
  mutations: readonly Mutation[],
  others: readonly Uint8Array[] = [],
): Uint8Array {
  let bytes = Array.from(base);
  for (const m of mutations) {
    const at =
      bytes.length === 0
        ? 0
        : m.kind === 'length' || m.kind === 'splice'
          ? 0
          : (m as { at: number }).at % (bytes.length + 1);
    switch (m.kind) {
      case 'flip':
        if (bytes.length > 0) bytes[m.at % bytes.length] ^= 1 << m.bit;
        break;
      case 'truncate':
        bytes = bytes.slice(0, at);
        break;
      case 'insert':
        bytes.splice(at, 0, ...m.bytes);
        break;
      case 'delete':
        bytes.splice(at, m.length);
        break;
      case 'overwrite':
        for (let i = 0; i < m.bytes.length && at + i < bytes.length; i++) bytes[at + i] = m.bytes[i];
        break;
      case 'splice': {
        const pool = others.length > 0 ? others : [base];
        const other = pool[m.other % pool.length];
        const from = other.length === 0 ? 0 : m.from % other.length;
        const to = bytes.length === 0 ? 0 : m.at % (bytes.length + 1);
        bytes.splice(to, 0, ...other.subarray(from, from + m.length));
        break;
      }
      case 'length': {
        const fields = lengthFields(Uint8Array.from(bytes));
        if (fields.length === 0) break;
        const f = fields[m.which % fields.length];
        bytes.splice(f.at, f.size, ...encodeVarint(m.value));
        break;
      }
    }
  }
  return Uint8Array.from(bytes);
}

/** Bytes that are a valid encoding with 1..4 mutations applied, or plain random bytes. */
export function mutatedBytes(
  valid: fc.Arbitrary<Uint8Array>,
  others: readonly Uint8Array[] = [],
): fc.Arbitrary<Uint8Array> {
  return fc.oneof(
    {
      weight: 8,
      arbitrary: fc
        .tuple(valid, fc.array(mutationArb, { minLength: 1, maxLength: 4 }))
        .map(([b, ms]) => mutate(b, ms, others)),
    },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 256 }) },
    { weight: 1, arbitrary: valid },
  );
}

/**
 * Values whose string conversion throws (objects without a prototype, objects with a
 * non-function own `toString`/`valueOf`, anywhere inside a value) are part of the run: they found
 * untyped TypeErrors from validation messages in lib/soccr (fixed in dcbe7ac) and lib/criu (fixed
 * by describeValue in lib/errors.ts; test/fuzz/repro/untyped-errors.js replays the 20 cases).
 * FUZZ_EXOTIC=0 leaves them out, to tell such a failure from others.
 */
export const EXOTIC = process.env.FUZZ_EXOTIC !== '0';

/** String() works on the value and on everything inside it (see EXOTIC). */
export function stringSafe(value: unknown, depth = 0): boolean {
  try {
    String(value);
  } catch {
    return false;
  }
  if (depth > 6 || typeof value !== 'object' || value === null) return true;
  const inner =
    value instanceof Map
      ? [...value.keys(), ...value.values()]
      : value instanceof Set
        ? [...value]
        : Object.values(value);
  return inner.every((v) => stringSafe(v, depth + 1));
}

/** Leaves out values whose string conversion throws when FUZZ_EXOTIC=0. */
export function withoutOpenBugs<T>(arb: fc.Arbitrary<T>): fc.Arbitrary<T> {
  return EXOTIC ? arb : arb.filter((v) => stringSafe(v));
}

/** Random values of every shape, including the awkward ones (NaN, -0, sparse arrays, boxed values). */
export const anyValue: fc.Arbitrary<unknown> = withoutOpenBugs(
  fc.oneof(
    {
      weight: 6,
      arbitrary: fc.anything({
        withBigInt: true,
        withBoxedValues: true,
        withMap: true,
        withSet: true,
        withTypedArray: true,
        withDate: true,
        withNullPrototype: EXOTIC,
        withSparseArray: true,
        maxDepth: 3,
      }),
    },
    {
      weight: 1,
      arbitrary: fc.constantFrom(
        undefined,
        null,
        NaN,
        -0,
        Infinity,
        -Infinity,
        '',
        [],
        {},
        Symbol('x'),
        () => 1,
        Buffer.alloc(3),
      ),
    },
    { weight: 2, arbitrary: fc.integer() },
    { weight: 1, arbitrary: fc.double() },
  ),
);

/** Objects made from `keys` (plus a stray one) with random values: they get past "is an object". */
export function objectWith(
  keys: readonly string[],
  values: fc.Arbitrary<unknown> = anyValue,
): fc.Arbitrary<Record<string, unknown>> {
  return withoutOpenBugs(
    fc.dictionary(
      fc.oneof(
        { weight: 8, arbitrary: fc.constantFrom(...keys) },
        { weight: 1, arbitrary: fc.string({ maxLength: 8 }) },
      ),
      values,
      { maxKeys: 6, noNullPrototype: !EXOTIC },
    ),
  );
}
