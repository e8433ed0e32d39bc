/**
 * A connections handover that reaches the agent (an authenticated TLS socket whose first frame is
 * the handover protocol's) is accepted here — the agent restores the connections, limited to the
 * ports applications registered — and each restored connection is then passed, live, with its
 * state, to the application registered for its local port (method 'fd' over that application's
 * SEQPACKET transport). A connection whose application is gone by then cannot be kept: it is
 * closed and counted as lost (the agent refuses the handover up front when no application serves
 * the ports, so this only happens when an application dies mid-handover).
 */
import type * as net from 'node:net';
import type * as tls from 'node:tls';

import { acceptHandover, handOverConnections } from '../migration/connections';
import type { AppRegistry, RegisteredApp } from './app-registry';

/** 'NCHO': the first bytes of a connections handover (lib/migration/handover-channel.ts). */
export const HANDOVER_MAGIC = 0x4e43484f;

/** The first 4 bytes of the stream, put back for whoever reads it next. */
export function peekMagic(socket: tls.TLSSocket, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => done(new Error('no data')), timeoutMs);
    const done = (error?: Error, magic?: number): void => {
      clearTimeout(timer);
      socket.removeListener('readable', onReadable);
      socket.removeListener('close', onClose);
      if (error) reject(error);
      else resolve(magic as number);
    };
    const onClose = (): void => done(new Error('closed'));
    const onReadable = (): void => {
      const head = socket.read(4) as Buffer | null;
      if (head === null) return;
      socket.unshift(head);
      done(undefined, head.readUInt32BE(0));
    };
    socket.on('readable', onReadable);
    socket.once('close', onClose);
    onReadable();
  });
}

export interface RelayResult {
  accepted: number;
  passed: number;
  lost: number;
}

export interface RelayOptions {
  signal?: AbortSignal;
  timeoutMs?: number;
  /** Restore into this network namespace (default: the agent's). */
  netns?: string;
  onEvent?: (event: { event: string; [key: string]: unknown }) => void;
}

export async function relayConnectionsHandover(
  channel: net.Socket,
  registry: AppRegistry,
  options: RelayOptions = {},
): Promise<RelayResult> {
  const restored: Array<{ socket: net.Socket; state: Buffer }> = [];
  const accepted = await acceptHandover({
    from: channel,
    onConnection: (socket, state) => {
      restored.push({ socket, state });
    },
    accept: () => (registry.ports().length > 0 ? true : 'no application is registered with the agent'),
    // Only connections to ports an application serves here; the source names nothing else.
    allow: { ports: registry.ports() },
    ...(options.netns !== undefined ? { netns: options.netns } : {}),
    ...(options.signal !== undefined ? { signal: options.signal } : {}),
    ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
  });
  const groups = new Map<RegisteredApp, Array<{ socket: net.Socket; state: Buffer }>>();
  let lost = 0;
  for (const entry of restored) {
    const app = registry.appFor(entry.socket.localPort ?? 0);
    if (app === undefined) {
      entry.socket.destroy();
      lost++;
      continue;
    }
    const group = groups.get(app) ?? [];
    group.push(entry);
    groups.set(app, group);
  }
  let passed = 0;
  for (const [app, group] of groups) {
    const states = new Map(group.map((e) => [e.socket, e.state]));
    try {
      app.busy = true;
      app.transport.send(Buffer.from(JSON.stringify({ start: 1 })));
      const result = await handOverConnections(
        group.map((e) => e.socket),
        {
          to: app.transport,
          method: 'fd',
          serializeState: (socket) => states.get(socket) ?? Buffer.alloc(0),
          // Back with the agent, which serves nothing: the connection cannot live here.
          onResumed: (socket) => {
            socket.destroy();
            lost++;
          },
          ...(options.signal !== undefined ? { signal: options.signal } : {}),
        },
      );
      passed += result.handedOver;
    } catch (error) {
      options.onEvent?.({ event: 'relay-failed', pid: app.peer.pid, error: (error as Error).message });
      // handOverConnections gave every connection it did not pass back through onResumed.
    } finally {
      app.busy = false;
    }
  }
  options.onEvent?.({ event: 'relay-done', accepted: accepted.accepted, passed, lost });
  return { accepted: accepted.accepted, passed, lost };
}
