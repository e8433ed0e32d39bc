/**
 * holdPackets: holds the peers' packets of some connections (or of a service's address and port)
 * in the kernel instead of dropping them, and re-injects them once their restored sockets exist.
 * A peer whose packet was dropped during a freeze recovers only at its next retransmission
 * (200 ms, then 0.6, 1.4, 3 s after the first send); a held packet reaches the restored socket
 * the moment the hold is released, which acknowledges it and ends the peer's backoff.
 *
 * Mechanism: per IP family an nftables table (nft/hold-table.ts) sends the matched packets to a
 * netfilter queue that this process reads over netlink (csrc/nfqueue.cc, copy mode META: only
 * ids reach us). Bounds: `maxPackets` (the queue's length) and `maxBytes` (a quota); beyond them
 * packets are dropped, as a lock would. No bypass: with no reader (this process gone) the kernel
 * drops what the rule queues and what was held. Re-injection happens where the packets were
 * queued, so the hold must live in the namespace of the restored sockets, and `release()` only
 * once they exist (a packet re-injected with no socket would be answered with RST); anything
 * else is `drop()`.
 *
 * While a hold holds packets, no base chain may be deleted in its namespace: the kernel drops
 * every queued packet of the namespace whenever a netfilter hook is unregistered (measured:
 * nfnetlink_queue's queue_total falls to 0 when another table's chain is deleted). Empty a drop
 * lock there (remove its elements or rules) instead of deleting it, release the hold, then
 * delete the lock; a hold's own release empties its chains first and deletes its tables last.
 */
import { randomBytes } from 'node:crypto';

import { describeValue, fromNativeError, InvalidArgumentError } from '../errors';
import { checkNetnsPath } from '../security';
import { nftBatch, tablesOf, type NftTable } from '../sys/nft';
import { NftablesLockError } from './errors';
import { soccrBinding } from './native';
import { holdMatches, holdTableCommands, type HoldEndpoint } from './nft/hold-table';
import type { ConnectionTuple } from './nft/keys';
import { asLockError } from './nft/run';
import { deleteHoldTables, holdTableName, staleHoldTables } from './nft/sweep';

export type { HoldEndpoint } from './nft/hold-table';

const NFPROTO_IPV4 = 2;
const NFPROTO_IPV6 = 10;
const FAMILIES = { ip: NFPROTO_IPV4, ip6: NFPROTO_IPV6 } as const;
const DEFAULT_MAX_PACKETS = 10_000;
const DEFAULT_MAX_BYTES = 64 * 1024 * 1024;
const QUEUE_ATTEMPTS = 16;

export interface PacketHoldOptions {
  /** The namespace the restored sockets will live in (ours when undefined). */
  netns?: string;
  /** Connections whose peers' packets are held (remote -> local, as the lock takes them). */
  tuples?: readonly ConnectionTuple[];
  /** Local address . port pairs whose incoming TCP packets are held (a service, new SYNs too). */
  endpoints?: readonly HoldEndpoint[];
  /** At most this many packets held (1..1,000,000, default 10,000); later ones are dropped. */
  maxPackets?: number;
  /** At most this many bytes pass to the queue per family (default 64 MiB); later ones are dropped. */
  maxBytes?: number;
  signal?: AbortSignal;
  timeoutMs?: number;
}

/**
 * What a release or drop did: the packets it re-injected, and those dropped (by drop(), or found
 * gone: the kernel drops held packets when a hook of the namespace is unregistered).
 */
export interface PacketHoldResult {
  accepted: number;
  dropped: number;
}

function checkOptions(options: PacketHoldOptions): { maxPackets: number; maxBytes: number } {
  if (typeof options !== 'object' || options === null)
    throw new InvalidArgumentError('options must be an object', 'ERR_INVALID_ARG_TYPE');
  if (options.netns !== undefined) checkNetnsPath(options.netns);
  for (const key of ['tuples', 'endpoints'] as const) {
    if (options[key] !== undefined && !Array.isArray(options[key]))
      throw new InvalidArgumentError(`${key} must be an array`, 'ERR_INVALID_ARG_TYPE');
  }
  const bounded = (value: unknown, name: string, fallback: number, max: number): number => {
    if (value === undefined) return fallback;
    if (!Number.isInteger(value) || (value as number) < 1 || (value as number) > max)
      throw new InvalidArgumentError(
        `${name} must be an integer 1..${max} (got ${describeValue(value)})`,
        'ERR_OUT_OF_RANGE',
      );
    return value as number;
  };
  return {
    maxPackets: bounded(options.maxPackets, 'maxPackets', DEFAULT_MAX_PACKETS, 1_000_000),
    maxBytes: bounded(options.maxBytes, 'maxBytes', DEFAULT_MAX_BYTES, 2 ** 40),
  };
}

function asHoldError(error: unknown, what: string): NftablesLockError {
  return fromNativeError(NftablesLockError, error, what);
}

/** Binds a free queue number in `netns` (another reader's number is EBUSY: try the next). */
function openQueue(maxPackets: number, netns: string | undefined): { fd: number; num: number } {
  const first = 16384 + (randomBytes(2).readUInt16BE(0) % 49152);
  for (let i = 0; ; i++) {
    const num = 16384 + ((first - 16384 + i) % 49152);
    try {
      return { fd: soccrBinding().nfqueueOpen(num, maxPackets, netns), num };
    } catch (error) {
      if ((error as { code?: string }).code !== 'EBUSY' || i + 1 >= QUEUE_ATTEMPTS)
        throw asHoldError(error, 'packet hold: bind a netfilter queue');
    }
  }
}

/**
 * Starts holding: the queue reader first (so nothing is queued without one), then the tables.
 * Throws InvalidArgumentError for bad options (nothing made), NftablesLockError otherwise (what
 * was made is removed).
 */
export async function holdPackets(options: PacketHoldOptions): Promise<PacketHold> {
  const { maxPackets, maxBytes } = checkOptions(options);
  const matches = holdMatches(options.tuples ?? [], options.endpoints ?? []);
  const families = (['ip', 'ip6'] as const).filter((f) => matches[f].tuples.length + matches[f].endpoints.length > 0);
  if (families.length === 0)
    throw new InvalidArgumentError('nothing to hold: pass tuples or endpoints', 'ERR_INVALID_ARG_VALUE');
  const { netns } = options;
  const { fd, num } = openQueue(maxPackets, netns);
  const hold = new PacketHold(holdTableName(), netns, fd, num, families);
  let listed: NftTable[];
  try {
    const commands = [
      ...families.flatMap((f) => holdTableCommands(f, hold.table, matches[f], maxBytes)),
      { list: { tables: null } },
    ];
    const run = {
      ...(netns !== undefined ? { netns } : {}),
      signal: options.signal,
      timeoutMs: options.timeoutMs ?? 10_000,
    };
    listed = tablesOf(await asLockError(netns, () => nftBatch(commands, run)));
    for (const family of families) {
      try {
        soccrBinding().nfqueueRule(FAMILIES[family], hold.table, 'hold', num, netns);
      } catch (error) {
        throw asHoldError(error, 'packet hold: queue rule');
      }
    }
  } catch (error) {
    await hold.drop();
    throw error;
  }
  deleteHoldTables(staleHoldTables(listed), netns);
  return hold;
}

/**
 * Deletes holds' tables over netlink (nft cannot: it fails to parse their xtables rule). A table
 * left by a process that died before its exit hook drops its packets until then.
 */
// Holds whose tables must go when the process exits (a table left behind with no reader drops the
// matched packets for good). 'exit' runs no more event-loop turns: one netlink delete each.
const live = new Set<PacketHold>();
let exitHook = false;

function deleteOnExit(hold: PacketHold): void {
  live.add(hold);
  if (exitHook) return;
  exitHook = true;
  process.once('exit', () => {
    for (const h of live) {
      for (const family of h.families) {
        try {
          soccrBinding().nftDeleteTable(FAMILIES[family], h.table, h.netns);
        } catch {
          // gone already, or its namespace is
        }
      }
    }
  });
}

export class PacketHold {
  private finished?: Promise<PacketHoldResult>;
  private count = 0;
  private lastId = 0;

  /** @internal made by holdPackets */
  constructor(
    /** The tables' name (one table per family listed in `families`). */
    readonly table: string,
    readonly netns: string | undefined,
    private fd: number,
    /** The netfilter queue number the packets wait in. */
    readonly queue: number,
    readonly families: ReadonlyArray<'ip' | 'ip6'>,
  ) {
    deleteOnExit(this);
  }

  /** How many packets the queue has held so far (read from the reader's socket now). */
  held(): number {
    if (this.fd >= 0) this.take(soccrBinding().nfqueueRead(this.fd));
    return this.count;
  }

  private take([packets, lastId, any]: [number, number, number]): void {
    if (any === 0) return;
    this.count += packets;
    this.lastId = lastId;
  }

  /**
   * Re-injects every held packet where it was queued, and stops holding. Call it only once the
   * sockets the packets are for exist (else they meet no socket and the kernel answers RST).
   * Idempotent (a second call resolves with the first's result).
   */
  release(): Promise<PacketHoldResult> {
    return (this.finished ??= this.finish(true));
  }

  /** Drops every held packet and stops holding (the peers retransmit later). Idempotent. */
  drop(): Promise<PacketHoldResult> {
    return (this.finished ??= this.finish(false));
  }

  /** Alias of drop(), for `using`-style clean-up. */
  close(): Promise<PacketHoldResult> {
    return this.drop();
  }

  private async finish(accept: boolean): Promise<PacketHoldResult> {
    const binding = soccrBinding();
    let done = 0;
    let lost = 0;
    let failure: unknown;
    try {
      // Nothing new is queued once the hold chains are empty; what they queued stays held (deleting
      // the tables first would drop it).
      for (const family of this.families) {
        try {
          binding.nfqueueRule(FAMILIES[family], this.table, 'hold', -1, this.netns);
        } catch (error) {
          if ((error as { code?: string }).code !== 'ENOENT') throw error;
        }
      }
      this.held();
      let verdictUpTo = 0;
      while (this.count > verdictUpTo) {
        const from = verdictUpTo;
        verdictUpTo = this.count;
        try {
          this.take(binding.nfqueueVerdict(this.fd, this.queue, this.lastId, accept));
          done += verdictUpTo - from;
        } catch (error) {
          // ENOENT: the kernel no longer holds them (dropped when a hook was unregistered).
          if ((error as { code?: string }).code !== 'ENOENT') throw error;
          lost += verdictUpTo - from;
        }
      }
    } catch (error) {
      failure = asHoldError(error, accept ? 'packet hold: release' : 'packet hold: drop');
    } finally {
      live.delete(this);
      // Closing the reader drops anything still held; the tables go last.
      if (this.fd >= 0) binding.socketOps.closeFd(this.fd);
      this.fd = -1;
      for (const family of this.families) {
        try {
          binding.nftDeleteTable(FAMILIES[family], this.table, this.netns);
        } catch (error) {
          if ((error as { code?: string }).code !== 'ENOENT')
            failure ??= asHoldError(error, 'packet hold: delete table');
        }
      }
    }
    if (failure !== undefined) throw failure;
    return accept ? { accepted: done, dropped: lost } : { accepted: 0, dropped: done + lost };
  }
}
