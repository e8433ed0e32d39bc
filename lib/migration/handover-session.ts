/**
 * serveHandover: the target's half of one handover over a channel whose peer is authenticated
 * (TLS, or a unix peer of root or our uid) and whose HELLO passed readHello. It stages every
 * connection (repair mode, behind a lock), answers COMMIT with RESULT, and commits only on an
 * explicit DONE, then answers COMMITTED; ABORT, a closed channel or the time limit before DONE
 * drop every staged copy silently (docs/ARCHITECTURE.md, "Who owns a connection").
 * Nothing from the peer is used unchecked: HELLO's count and tuples are bounded, every image's
 * local address and port must be in `allow` and (when HELLO announced tuples) announced, and the
 * nftables lock is made only after all of that.
 */
import * as net from 'node:net';

import { NftablesLock, decodeConnectionImage } from '../soccr';
import type { ConnectionImage, ConnectionTuple } from '../soccr';
import { InvalidArgumentError } from '../errors';
import type { HandoverChannel, HandoverMessage } from './handover-channel';
import { closeFdQuietly, HandoverError } from './handover-errors';
import {
  MessageType,
  decodeConnection,
  decodeCount,
  decodeDone,
  decodeEmpty,
  decodeHello,
  encodeCommitted,
  encodeCount,
  encodeReason,
  encodeResult,
  encodeWelcome,
  protocolError,
} from './handover-messages';
import type { Failure, HandoverMethod, HelloBody } from './handover-messages';
import { warmUpImageCodec } from './handover-source-held';
import { StagingPipeline, failureOf } from './handover-session-staging';

export interface AllowList {
  ports?: number[];
  addresses?: string[];
}

export interface TargetLimits {
  maxConnections: number;
  maxImageBytes: number;
  maxStateBytes: number;
  maxTotalBytes: number;
}

export interface SessionOptions {
  limits: TargetLimits;
  allow: AllowList;
  onConnection: (socket: net.Socket, state: Buffer) => void | Promise<void>;
  netns?: string;
  lock?: 'nftables' | 'none';
  accept?: (hello: HelloBody) => boolean | string;
  onProgress?: (event: { phase: string }) => void | Promise<void>;
}

interface Staged {
  id: number;
  state: Buffer;
  image?: ConnectionImage;
  fd?: number;
  pendingRead?: Buffer;
}

/** An IPv4-mapped IPv6 address is the IPv4 address it maps (as on the wire). */
function plainAddress(address: string): { address: string; type: 'ipv4' | 'ipv6' } {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return { address: mapped[1], type: 'ipv4' };
  return { address, type: net.isIPv6(address) ? 'ipv6' : 'ipv4' };
}

/** A predicate over local endpoints; throws InvalidArgumentError for an entry that is no IP or CIDR. */
export function allowChecker(allow: AllowList): (local: { address: string; port: number }) => boolean {
  let list: net.BlockList | undefined;
  if (allow.addresses !== undefined) {
    list = new net.BlockList();
    for (const entry of allow.addresses) {
      const [ip, bits, extra] = entry.split('/');
      const { address, type } = plainAddress(ip);
      const prefix = bits === undefined ? undefined : Number(bits);
      const max = type === 'ipv4' ? 32 : 128;
      if (
        net.isIP(address) === 0 ||
        extra !== undefined ||
        (prefix !== undefined && !(Number.isInteger(prefix) && prefix >= 0 && prefix <= max)) ||
        (bits !== undefined && !/^\d+$/.test(bits))
      )
        throw new InvalidArgumentError(`allow.addresses: '${entry}' is not an IP address or CIDR`);
      if (prefix === undefined) list.addAddress(address, type);
      else list.addSubnet(address, prefix, type);
    }
  }
  const ports = allow.ports === undefined ? undefined : new Set(allow.ports);
  return (local) => {
    if (ports !== undefined && !ports.has(local.port)) return false;
    if (list === undefined) return true;
    const { address, type } = plainAddress(local.address);
    return list.check(address, type);
  };
}

const tupleKey = (t: ConnectionTuple): string =>
  `${plainAddress(t.local.address).address} ${t.local.port} ${plainAddress(t.remote.address).address} ${t.remote.port}`;

/** Sets the channel's bounds and reads the peer's HELLO (ERR_HANDOVER_PROTOCOL if it is not valid). */
export async function readHello(
  channel: HandoverChannel,
  options: SessionOptions,
  signal: AbortSignal,
): Promise<HelloBody> {
  channel.limits = options.limits;
  channel.connectionBudget = options.limits.maxTotalBytes;
  const message = await channel.expect([MessageType.HELLO], signal);
  return decodeHello(message.payload, options.limits.maxConnections);
}

function refusalOf(hello: HelloBody, channel: HandoverChannel, options: SessionOptions): string | undefined {
  if (hello.method === 'fd' && !channel.canPassFds) return `method 'fd' needs a SEQPACKET channel`;
  const allowed = allowChecker(options.allow);
  const outside = hello.tuples?.find((t) => !allowed(t.local));
  if (outside) return `connections to ${outside.local.address}:${outside.local.port} are not allowed here`;
  if (options.accept) {
    const verdict = options.accept(hello);
    if (verdict !== true) return typeof verdict === 'string' ? verdict : 'refused by the application';
  }
  return undefined;
}

export async function serveHandover(
  channel: HandoverChannel,
  hello: HelloBody,
  options: SessionOptions,
  signal: AbortSignal,
  started = performance.now(),
): Promise<{
  method: HandoverMethod;
  accepted: number;
  failed: number;
  phases: { stage: number; restore: number; total: number };
}> {
  warmUpImageCodec();
  const staged: Staged[] = [];
  let lock: NftablesLock | undefined;
  let pipeline: StagingPipeline | undefined;
  let doneReceived = false;
  const progress = async (phase: string): Promise<void> => {
    await options.onProgress?.({ phase });
  };
  const send = (type: MessageType, body?: Uint8Array): Promise<void> => channel.send(type, 0, body, { signal });
  try {
    const refusal = refusalOf(hello, channel, options);
    if (refusal !== undefined) {
      await send(MessageType.REFUSE, encodeReason(refusal)).catch(() => undefined);
      throw new HandoverError(`handover refused: ${refusal}`, 'ERR_HANDOVER_REFUSED');
    }
    await progress('hello');
    const allowed = allowChecker(options.allow);
    const announced = hello.tuples === undefined ? undefined : new Set(hello.tuples.map(tupleKey));
    // The gap lock (when the address moves here) is made only now, from a checked HELLO, before
    // WELCOME: nothing is paused yet, so none of this lengthens the connections' pause.
    if (
      hello.method === 'repair' &&
      hello.addressMoves &&
      (options.lock ?? 'nftables') === 'nftables' &&
      hello.count > 0
    ) {
      lock = await NftablesLock.create({
        sweepable: true,
        ...(options.netns === undefined ? {} : { netns: options.netns }),
      });
      await lock.add(hello.tuples ?? []);
    }
    await send(MessageType.WELCOME, encodeWelcome({ pid: process.pid }));
    const restoring = new StagingPipeline(options.netns, lock, (image) => announced?.has(tupleKey(image)) ?? false);
    pipeline = restoring;

    const ids = new Set<number>();
    const tuples = new Set<string>();
    for (;;) {
      const message: HandoverMessage = await channel.expect(
        [MessageType.CONNECTION, MessageType.CONNECTION_FD, MessageType.STAGE_END],
        signal,
      );
      if (message.type === MessageType.STAGE_END) {
        if (decodeCount(MessageType.STAGE_END, message.payload, hello.count) !== staged.length)
          throw protocolError('STAGE_END count differs from the connections sent');
        break;
      }
      try {
        if (ids.has(message.id) || staged.length >= hello.count)
          throw protocolError(`connection ${message.id} repeated, or more connections than HELLO announced`);
        ids.add(message.id);
        const [first, state] = decodeConnection(message.type, message.payload);
        if (message.type === MessageType.CONNECTION_FD) {
          if (hello.method !== 'fd' || message.fds.length !== 1)
            throw protocolError('CONNECTION_FD without exactly one fd, or in a repair handover');
          staged.push({
            id: message.id,
            state: Buffer.from(state),
            fd: message.fds[0],
            pendingRead: Buffer.from(first),
          });
          message.fds = [];
        } else {
          if (hello.method !== 'repair') throw protocolError('CONNECTION in an fd handover');
          const image = decodeConnectionImage(first);
          const key = tupleKey(image);
          if (!allowed(image.local) || (announced !== undefined && !announced.has(key)) || tuples.has(key))
            throw new HandoverError(
              `connection ${image.local.address}:${image.local.port} <- ${image.remote.address}:${image.remote.port} is not allowed, not announced or repeated`,
              'ERR_HANDOVER_NOT_ALLOWED',
            );
          tuples.add(key);
          // An image's lock is a hint (stageRestoreConnections trusts only ours or our namespace's);
          // from a peer, only a node-criu lock table is worth the hint.
          if (image.lock !== undefined && !image.lock.table.startsWith('node_criu_')) delete image.lock;
          staged.push({ id: message.id, state: Buffer.from(state), image });
          restoring.add(message.id, image);
        }
      } finally {
        message.fds.forEach(closeFdQuietly);
      }
      if (staged.length === 1) await progress('connection');
    }

    await restoring.finish();
    await send(MessageType.STAGED, encodeCount(staged.length));
    const stagedAt = performance.now();
    await progress('staged');

    decodeEmpty(MessageType.COMMIT, (await channel.expect([MessageType.COMMIT], signal)).payload);
    await progress('commit');
    const failed = restoring.failed;
    const groups = restoring.groups;
    const restoredIds = hello.method === 'fd' ? staged.map((s) => s.id) : restoring.stagedIds();
    await send(MessageType.RESULT, encodeResult({ restored: restoredIds, failed }));
    await progress('result');

    // The copies stay in repair mode and locked until the source lets go (DONE). ABORT, a
    // closed channel or the time limit before that: they are dropped silently (finally).
    const done = decodeDone((await channel.expect([MessageType.DONE], signal)).payload, new Set(restoredIds));
    doneReceived = true;
    await progress('done');
    const commit = new Set(done.commit);
    const sockets: Array<{ id: number; socket: net.Socket; state: Buffer }> = [];
    const commitFailed: Failure[] = [];
    if (hello.method === 'fd') {
      for (const s of staged) {
        if (!commit.has(s.id) || s.fd === undefined) continue;
        const socket = new net.Socket({ fd: s.fd, readable: true, writable: true });
        s.fd = undefined;
        if (s.pendingRead && s.pendingRead.length > 0) socket.unshift(s.pendingRead);
        sockets.push({ id: s.id, socket, state: s.state });
      }
    } else {
      const stateOf = new Map(staged.map((s) => [s.id, s.state]));
      for (const group of groups) {
        if (!group.ids.every((id) => commit.has(id))) continue; // aborted in finally
        try {
          const live = await group.restore.commit();
          live.forEach((socket, i) =>
            sockets.push({ id: group.ids[i], socket, state: stateOf.get(group.ids[i]) as Buffer }),
          );
        } catch (error) {
          for (const id of group.ids) commitFailed.push(failureOf(id, error as Error));
        }
      }
    }
    // The connections are ours now whether or not COMMITTED gets through.
    await send(
      MessageType.COMMITTED,
      encodeCommitted({ committed: sockets.map((s) => s.id), failed: commitFailed }),
    ).catch(() => undefined);
    const restoredAt = performance.now();
    await progress('committed').catch(() => undefined);
    for (const s of sockets) await options.onConnection(s.socket, s.state);
    return {
      method: hello.method,
      accepted: sockets.length,
      failed: failed.length + commitFailed.length,
      phases: { stage: stagedAt - started, restore: restoredAt - stagedAt, total: performance.now() - started },
    };
  } catch (error) {
    const code = (error as { code?: string }).code;
    // Tell the source, unless it already knows (refused, it aborted, or it is gone).
    if (
      !doneReceived &&
      !['ERR_HANDOVER_REFUSED', 'ERR_HANDOVER_PEER_ABORTED', 'ERR_HANDOVER_CHANNEL_CLOSED'].includes(code ?? '')
    )
      await channel.abort((error as Error).message);
    if (error instanceof HandoverError) throw error;
    const protocol = code === 'ERR_CONNECTION_IMAGE_INVALID';
    throw new HandoverError(
      (error as Error).message,
      protocol ? 'ERR_HANDOVER_PROTOCOL' : (code ?? 'ERR_HANDOVER_FAILED'),
      error,
    );
  } finally {
    // Those not committed: closed silently, once no restore runs any more.
    await pipeline?.settle();
    pipeline?.groups.forEach((group) => group.restore.abort());
    for (const s of staged) if (s.fd !== undefined) closeFdQuietly(s.fd);
    channel.close();
    if (lock) await lock.destroy().catch(() => undefined);
  }
}
