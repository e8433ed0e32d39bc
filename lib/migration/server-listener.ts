/**
 * The listening side of a server handover. New SYNs to the service are dropped (not refused)
 * while nobody may accept: the client's kernel retransmits the SYN (after 1 s, then 3 s...) and
 * reaches whichever listener is there by then; a closed port would answer RST instead. The drop
 * rule lives in a node-criu lock table (NftablesLock: deleted when this process exits, swept
 * when it was killed). Connections whose handshake completed before the rule are accepted by the
 * source first (the accept queue is drained), so none is left in a queue that closes.
 */
import * as fs from 'node:fs';
import type * as net from 'node:net';

import { NftablesLock } from '../soccr';
import { nftBatch, type NftCommand } from '../sys/nft';
import { listenerBacklog, ownTcpTables } from '../sys/proc';
import { abortError } from './handover-channel';
import { HandoverError } from './handover-errors';
import { listenerFd } from './server-http';

export interface ServiceAddress {
  /** undefined: every address (a wildcard listener). */
  address?: string;
  port: number;
}

/** The address a listener serves: wildcard binds ('0.0.0.0', '::') match every destination. */
export function serviceOf(address: net.AddressInfo): ServiceAddress {
  const wildcard = address.address === '0.0.0.0' || address.address === '::';
  return wildcard ? { port: address.port } : { address: address.address, port: address.port };
}

function synDropRule(table: string, service: ServiceAddress): NftCommand {
  const match = (left: unknown, right: unknown): unknown => ({ match: { op: '==', left, right } });
  const payload = (protocol: string, field: string): unknown => ({ payload: { protocol, field } });
  const expr: unknown[] = [match(payload('tcp', 'dport'), service.port)];
  if (service.address !== undefined) {
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(service.address);
    const address = mapped ? mapped[1] : service.address;
    expr.push(match(payload(address.includes(':') ? 'ip6' : 'ip', 'daddr'), address));
  }
  // A SYN alone (no ACK, FIN or RST): a new connection; everything of existing ones passes.
  expr.push(match({ '&': [payload('tcp', 'flags'), ['fin', 'syn', 'rst', 'ack']] }, 'syn'), { drop: null });
  return { add: { rule: { family: 'inet', table, chain: 'input', expr } } };
}

/** Drops new SYNs to `service` in our network namespace until destroy(). */
export class SynHold {
  private constructor(private readonly lock: NftablesLock) {}

  static async create(service: ServiceAddress): Promise<SynHold> {
    let lock: NftablesLock | undefined;
    try {
      lock = await NftablesLock.create({ sweepable: true });
      await nftBatch([synDropRule(lock.table, service)]);
      return new SynHold(lock);
    } catch (error) {
      await lock?.destroy().catch(() => undefined);
      throw new HandoverError(
        `cannot hold new connections to port ${service.port} with nftables: ${(error as Error).message}` +
          ` (pass holdSyns: 'none' to go without)`,
        (error as { code?: string }).code === 'EPERM' ? 'EPERM' : 'ERR_HANDOVER_SYN_HOLD',
        error,
      );
    }
  }

  /** Idempotent. */
  async destroy(): Promise<void> {
    await this.lock.destroy();
  }
}

const pause = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Resolves once the listener's accept queue is empty and no handshake is in progress on its port
 * (with new SYNs held, nothing can join either): every connection the kernel established has
 * been accepted by Node, and is the server's. Rejects with ERR_HANDOVER_SERVER_BUSY at `deadline`.
 */
export async function drainAcceptQueue(server: net.Server, deadline: number, signal: AbortSignal): Promise<void> {
  const inode = /^socket:\[(\d+)\]$/.exec(await fs.promises.readlink(`/proc/self/fd/${listenerFd(server)}`))?.[1];
  const port = (server.address() as net.AddressInfo).port;
  for (;;) {
    if (signal.aborted) throw abortError(signal);
    const backlog = inode === undefined ? undefined : listenerBacklog(await ownTcpTables(), inode, port);
    if (backlog === undefined)
      throw new HandoverError('the listening socket is not in /proc/net/tcp', 'ERR_HANDOVER_SERVER_INTERNALS');
    if (backlog.queued === 0 && backlog.handshakes === 0) return;
    if (performance.now() > deadline)
      throw new HandoverError(
        `${backlog.queued} connections still queued and ${backlog.handshakes} handshakes in progress`,
        'ERR_HANDOVER_SERVER_BUSY',
      );
    await pause(2);
  }
}
