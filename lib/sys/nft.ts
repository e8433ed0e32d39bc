/**
 * nft through its JSON interface only: every command goes in as a JSON batch (`nft -j`) and
 * every listing comes back as JSON (`nft -j list ...`), so no text of nft's is parsed. nft runs
 * through the one runner (lib/sys/exec.ts), in a network namespace when asked. The builders and
 * parsers here are pure; the netlink path for set elements is csrc/nft_elements.cc.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { CommandError } from './errors';
import { findExecutable, run, type RunOptions } from './exec';

/** One object of nft's JSON (`{ table: {...} }`, `{ set: {...} }`, `{ rule: {...} }`, ...). */
export type NftObject = Record<string, Record<string, unknown>>;
/** One command of a JSON batch (`{ add: { table: {...} } }`, `{ delete: ... }`, `{ list: ... }`). */
export type NftCommand = Record<string, unknown>;

export interface NftTable {
  family: string;
  name: string;
}

/** A set element: the values of a concatenation (addresses as text, ports as numbers), or one value. */
export type NftElement = Array<string | number>;

/** nft: $NODE_CRIU_NFT, else `nft` on PATH, /usr/sbin or /sbin; undefined when there is none. */
export function findNft(): string | undefined {
  const override = process.env.NODE_CRIU_NFT;
  if (override !== undefined) return fs.existsSync(override) ? override : undefined;
  return findExecutable('nft', ['/usr/sbin', '/sbin']);
}

export type NftRunOptions = Pick<RunOptions, 'netns' | 'signal' | 'timeoutMs'>;

const DEFAULT_TIMEOUT_MS = 30_000;

function nftCommand(): string {
  const nft = findNft();
  if (nft === undefined)
    throw new CommandError('nft not found (install Debian package nftables, or set NODE_CRIU_NFT)', {
      code: 'ERR_COMMAND_NOT_FOUND',
      command: 'nft',
      args: [],
    });
  return nft;
}

/**
 * The objects of nft's JSON output (`{"nftables": [...]}`), without its metainfo. '' (a batch
 * that lists nothing) is none. Throws SyntaxError/TypeError for anything else.
 */
export function parseNftJson(text: string): NftObject[] {
  if (text.trim() === '') return [];
  const doc = JSON.parse(text) as { nftables?: unknown };
  if (typeof doc !== 'object' || doc === null || !Array.isArray(doc.nftables))
    throw new TypeError('nft JSON output without an nftables array');
  return (doc.nftables as unknown[]).filter(
    (o): o is NftObject => typeof o === 'object' && o !== null && !('metainfo' in o),
  );
}

/** The tables among parsed objects. */
export function tablesOf(objects: readonly NftObject[]): NftTable[] {
  const tables: NftTable[] = [];
  for (const object of objects) {
    const table = object.table;
    if (table !== undefined && typeof table.family === 'string' && typeof table.name === 'string')
      tables.push({ family: table.family, name: table.name });
  }
  return tables;
}

/** One element value of a set listing: a value, `{ concat: [...] }`, or `{ elem: { val } }` (with timeouts, counters). */
function elementOf(value: unknown): NftElement | undefined {
  if (typeof value === 'string' || typeof value === 'number') return [value];
  if (typeof value !== 'object' || value === null) return undefined;
  const v = value as { concat?: unknown; elem?: { val?: unknown } };
  if (Array.isArray(v.concat) && v.concat.every((x) => typeof x === 'string' || typeof x === 'number'))
    return v.concat as NftElement;
  if (v.elem !== undefined) return elementOf(v.elem.val);
  return undefined;
}

/** The first named counter among parsed objects: its packets and bytes. */
export function counterOf(objects: readonly NftObject[]): { packets: number; bytes: number } | undefined {
  const counter = objects.find((o) => o.counter !== undefined)?.counter;
  if (counter === undefined || typeof counter.packets !== 'number' || typeof counter.bytes !== 'number')
    return undefined;
  return { packets: counter.packets, bytes: counter.bytes };
}

/** The elements of the first set among parsed objects ([] when it has none). */
export function setElementsOf(objects: readonly NftObject[], name?: string): NftElement[] {
  const set = objects.find((o) => o.set !== undefined && (name === undefined || o.set.name === name))?.set;
  const elem = set?.elem;
  if (!Array.isArray(elem)) return [];
  return elem.map(elementOf).filter((e): e is NftElement => e !== undefined);
}

/**
 * Commands that make a copy of a listed table (`nft -j list table`) under the name `name`: the
 * table, its sets (with their elements), chains and rules, without the kernel's handles. With
 * `hooks`, only the base chains on those hooks (and their rules) are copied: a lock's copy on the
 * side where the connections are restored must not drop their output (`{ hooks: ['input'] }`).
 */
export function copyTableCommands(
  objects: readonly NftObject[],
  name: string,
  options: { hooks?: readonly string[] } = {},
): NftCommand[] {
  const { hooks } = options;
  const skipped = new Set<unknown>();
  if (hooks !== undefined) {
    for (const object of objects) {
      const chain = object.chain;
      if (chain !== undefined && !hooks.includes(String(chain.hook))) skipped.add(chain.name);
    }
  }
  const commands: NftCommand[] = [];
  for (const object of objects) {
    for (const [kind, body] of Object.entries(object)) {
      if ((kind === 'chain' && skipped.has(body.name)) || (kind === 'rule' && skipped.has(body.chain))) continue;
      const copy: Record<string, unknown> = { ...body };
      delete copy.handle;
      if (kind === 'table') copy.name = name;
      else copy.table = name;
      commands.push({ add: { [kind]: copy } });
    }
  }
  return commands;
}

export function deleteTableCommand(table: NftTable): NftCommand {
  return { delete: { table: { family: table.family, name: table.name } } };
}

/** A JSON batch's text. */
export function batchText(commands: readonly NftCommand[]): string {
  return JSON.stringify({ nftables: commands });
}

/**
 * A JSON batch goes to nft as its command line when it is short, else in a private temporary
 * file: nft reads `-f -` in JSON mode by opening /dev/stdin, which fails on the socket Node gives
 * a child as its stdin pipe, and one argument may not exceed the kernel's MAX_ARG_STRLEN.
 */
const ARGV_BATCH_MAX = 64 * 1024;

/** Runs `nft -j ARGS` (in `netns` when given); resolves with the parsed output. Rejects with CommandError. */
export async function nftJson(args: readonly string[], options: NftRunOptions = {}): Promise<NftObject[]> {
  const { stdout } = await run(nftCommand(), ['-j', ...args], { timeoutMs: DEFAULT_TIMEOUT_MS, ...options });
  return parseNftJson(stdout);
}

/** Runs one JSON batch (all or nothing); resolves with what its list commands printed. */
export async function nftBatch(commands: readonly NftCommand[], options: NftRunOptions = {}): Promise<NftObject[]> {
  const text = batchText(commands);
  if (Buffer.byteLength(text) <= ARGV_BATCH_MAX) return nftJson([text], options);
  const dir = await fs.promises.mkdtemp(path.join(os.tmpdir(), 'node-criu-nft-'));
  try {
    const file = path.join(dir, 'batch.json');
    await fs.promises.writeFile(file, text, { mode: 0o600 });
    return await nftJson(['-f', file], options);
  } finally {
    await fs.promises.rm(dir, { recursive: true, force: true });
  }
}

/** The tables of the namespace (of `family` when given). */
export async function listTables(options: NftRunOptions & { family?: string } = {}): Promise<NftTable[]> {
  const { family, ...rest } = options;
  return tablesOf(await nftJson(['list', 'tables', ...(family !== undefined ? [family] : [])], rest));
}

/** The table with everything in it, as objects. */
export function listTable(table: NftTable, options: NftRunOptions = {}): Promise<NftObject[]> {
  return nftJson(['list', 'table', table.family, table.name], options);
}

/** Whether the namespace has this table (a listing, not an error message, says so). */
async function hasTable(table: NftTable, options: NftRunOptions = {}): Promise<boolean> {
  return (await listTables({ ...options, family: table.family })).some((t) => t.name === table.name);
}

/**
 * Deletes the tables, each in its own batch, skipping those that are not there; resolves with
 * the ones it deleted. Tables that vanish meanwhile (another process deleting them) are skipped
 * too: a failed delete counts only when a listing still shows the table.
 */
export async function deleteTables(tables: readonly NftTable[], options: NftRunOptions = {}): Promise<NftTable[]> {
  const deleted: NftTable[] = [];
  for (const table of tables) {
    try {
      await nftBatch([deleteTableCommand(table)], options);
      deleted.push(table);
    } catch (error) {
      if (await hasTable(table, options)) throw error;
    }
  }
  return deleted;
}
