/**
 * acceptServerHandover: the successor's side of handOverServer. Each connection taken over
 * enters `server` as if it had accepted it (its socket options, the server's connection count,
 * then 'connection': node:http reads the next request on it with the successor's handlers), and
 * once all are in, `server.listen(listen)`. New SYNs to `listen` are dropped from the start of
 * the handover until the server listens (the source holds them before that): a client that
 * connects meanwhile retries instead of being refused.
 *
 * `from` is what acceptHandover takes, or `{ agent, ports? }`: the migration agent's application
 * socket (node-criu agent --app-socket), for a source on another host that hands over to the
 * agent; the SYN hold then starts at once (the service address arrives with the handover).
 */
import * as net from 'node:net';

import { acceptHandoverViaAgent } from '../agent/app-link';
import { InvalidArgumentError } from '../errors';
import { HandoverError } from './handover-errors';
import { acceptHandover } from './handover-target';
import type { AcceptHandoverOptions, AcceptHandoverResult } from './handover-target';
import { checkChoice, checkFunctions, checkServer, checkTimeout, decodeServerState } from './server-common';
import { enterServer, isHttpServer, startHttpConnectionsList, trackServerConnections } from './server-http';
import { serviceOf, SynHold } from './server-listener';

export interface AgentSource {
  /** The agent's application socket. */
  agent: string;
  /** Ports to register for (default: the port of `listen`). */
  ports?: number[];
  /** Called once the agent confirmed the registration (the source may start now). */
  onRegistered?: () => void;
}

export interface AcceptServerHandoverOptions extends Omit<AcceptHandoverOptions, 'from' | 'onConnection'> {
  from: AcceptHandoverOptions['from'] | AgentSource;
  /** What server.listen gets once every connection is in (a port, or { port, host?, ipv6Only?, backlog? }). */
  listen: number | { port: number; host?: string; ipv6Only?: boolean; backlog?: number };
  /** Called per connection with the state the source's serializeState returned, before the server sees it. */
  onConnection?: (socket: net.Socket, state: Buffer) => void | Promise<void>;
  /** 'nftables' (default): drop new SYNs to `listen` from the handover's start until the server listens. */
  holdSyns?: 'nftables' | 'none';
}

export interface AcceptServerHandoverResult extends AcceptHandoverResult {
  /** Connections entered into the server. */
  entered: number;
  listening: net.AddressInfo;
}

function listenOptions(listen: unknown): { port: number; host?: string; ipv6Only?: boolean; backlog?: number } {
  const spec = typeof listen === 'number' ? { port: listen } : listen;
  if (typeof spec !== 'object' || spec === null)
    throw new InvalidArgumentError('listen must be a port or { port, host? }', 'ERR_INVALID_ARG_TYPE');
  const { port, host, ipv6Only, backlog, ...rest } = spec as Record<string, unknown>;
  if (Object.keys(rest).length > 0) throw new InvalidArgumentError(`listen: unknown option '${Object.keys(rest)[0]}'`);
  if (!Number.isInteger(port) || (port as number) < 1 || (port as number) > 65535)
    throw new InvalidArgumentError('listen.port must be a TCP port (1..65535)', 'ERR_OUT_OF_RANGE');
  if (host !== undefined && (typeof host !== 'string' || net.isIP(host) === 0))
    throw new InvalidArgumentError('listen.host must be an IP address', 'ERR_INVALID_ARG_VALUE');
  if (ipv6Only !== undefined && typeof ipv6Only !== 'boolean')
    throw new InvalidArgumentError('listen.ipv6Only must be a boolean', 'ERR_INVALID_ARG_TYPE');
  if (backlog !== undefined && (!Number.isInteger(backlog) || (backlog as number) < 1))
    throw new InvalidArgumentError('listen.backlog must be a positive integer', 'ERR_OUT_OF_RANGE');
  return spec as { port: number; host?: string };
}

function isAgentSource(from: unknown): from is AgentSource {
  return typeof from === 'object' && from !== null && 'agent' in from;
}

function listenNow(server: net.Server, options: net.ListenOptions): Promise<net.AddressInfo> {
  return new Promise((resolve, reject) => {
    const onError = (error: Error): void =>
      reject(new HandoverError(`listen failed: ${error.message}`, 'ERR_HANDOVER_SERVER_LISTEN', error));
    server.once('error', onError);
    server.listen(options, () => {
      server.off('error', onError);
      resolve(server.address() as net.AddressInfo);
    });
  });
}

export async function acceptServerHandover(
  server: net.Server,
  options: AcceptServerHandoverOptions,
): Promise<AcceptServerHandoverResult> {
  checkServer(server, 'server');
  if (typeof options !== 'object' || options === null || options.from === undefined)
    throw new InvalidArgumentError('options.from is required', 'ERR_INVALID_ARG_TYPE');
  if (server.listening)
    throw new HandoverError(
      'server is listening already: it listens once the handover is done',
      'ERR_HANDOVER_SERVER_LISTENING',
    );
  const listen = listenOptions(options.listen);
  checkChoice(options.holdSyns, 'holdSyns', ['nftables', 'none']);
  checkTimeout(options.timeoutMs, 'timeoutMs');
  checkFunctions(options, ['onConnection', 'onProgress']);
  const agent = isAgentSource(options.from) ? options.from : undefined;
  if (agent) {
    if (typeof agent.agent !== 'string')
      throw new InvalidArgumentError('from.agent must be a socket path', 'ERR_INVALID_ARG_TYPE');
    checkFunctions(agent, ['onRegistered']);
  }

  trackServerConnections(server);
  if (isHttpServer(server)) startHttpConnectionsList(server);
  const service = serviceOf({ address: listen.host ?? '::', port: listen.port, family: '' });
  let hold: SynHold | undefined;
  const startHold = async (): Promise<void> => {
    if ((options.holdSyns ?? 'nftables') === 'nftables' && hold === undefined) hold = await SynHold.create(service);
  };
  let entered = 0;
  const onConnection = async (socket: net.Socket, bytes: Buffer): Promise<void> => {
    let state: Buffer;
    try {
      ({ state } = decodeServerState(bytes));
    } catch {
      socket.destroy(); // a state this version cannot read: the connection cannot be served as it was
      return;
    }
    await options.onConnection?.(socket, state);
    enterServer(server, socket);
    entered++;
  };
  try {
    let result: AcceptHandoverResult;
    if (agent) {
      await startHold();
      result = await acceptHandoverViaAgent({
        agent: agent.agent,
        ports: agent.ports ?? [listen.port],
        onConnection,
        ...(agent.onRegistered ? { onRegistered: agent.onRegistered } : {}),
        ...(options.signal ? { signal: options.signal } : {}),
        ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
      });
    } else {
      const { holdSyns: _hold, listen: _listen, onConnection: _user, ...rest } = options;
      result = await acceptHandover({
        ...rest,
        from: options.from as AcceptHandoverOptions['from'],
        onConnection,
        // The source holds SYNs until it is done; ours must be in place before it can be.
        onProgress: async (event) => {
          if (event.phase === 'hello') await startHold();
          await options.onProgress?.(event);
        },
      });
    }
    const listening = await listenNow(server, listen);
    return { ...result, entered, listening };
  } finally {
    await hold?.destroy().catch(() => undefined);
  }
}
