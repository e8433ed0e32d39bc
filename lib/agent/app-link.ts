/**
 * The application's side of the agent's connections route: a server on the target host that
 * takes connections from a source through the local migration agent, so it needs no privileges of
 * its own (the agent restores the connections; the application gets live sockets by fd passing).
 *
 *   await acceptHandoverViaAgent({ agent: '/run/node-criu/agent.sock', ports: [8080], onConnection })
 */
import type * as net from 'node:net';

import { InvalidArgumentError } from '../errors';
import { acceptHandover, HandoverError, type AcceptHandoverResult } from '../migration/connections';
import { SeqpacketTransport } from '../transport';
import { closeFdQuietly } from '../transport/seqpacket';
import { encodeRegistration } from './app-registry';

export interface AcceptViaAgentOptions {
  /** The agent's application socket (node-criu agent --app-socket). */
  agent: string;
  /** Local ports this application serves: connections to them are passed to it. */
  ports: number[];
  onConnection: (socket: net.Socket, state: Buffer) => void | Promise<void>;
  /** Called once the agent confirmed the registration (a source may start now). */
  onRegistered?: () => void;
  /** Aborts the wait for a handover, or the handover itself. */
  signal?: AbortSignal;
  /** Limit of the handover itself, from the agent's start signal (default 60000 ms); waiting has none. */
  timeoutMs?: number;
}

async function receiveJson(transport: SeqpacketTransport, signal?: AbortSignal): Promise<Record<string, unknown>> {
  const onAbort = (): void => transport.close();
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    const message = await transport.receive();
    message.fds.forEach(closeFdQuietly);
    if (message.data.length > 4096) throw new HandoverError('agent message too long', 'ERR_HANDOVER_PROTOCOL');
    return JSON.parse(message.data.toString('utf8')) as Record<string, unknown>;
  } catch (error) {
    if (signal?.aborted)
      throw new HandoverError('waiting for the agent aborted', 'ERR_HANDOVER_ABORTED', signal.reason);
    if (error instanceof SyntaxError)
      throw new HandoverError('agent sent malformed JSON', 'ERR_HANDOVER_PROTOCOL', error);
    throw error;
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}

/** Registers with the agent, waits for one handover and takes its connections. */
export async function acceptHandoverViaAgent(options: AcceptViaAgentOptions): Promise<AcceptHandoverResult> {
  if (typeof options !== 'object' || options === null)
    throw new InvalidArgumentError('options must be an object', 'ERR_INVALID_ARG_TYPE');
  if (typeof options.agent !== 'string')
    throw new InvalidArgumentError('agent must be a socket path', 'ERR_INVALID_ARG_TYPE');
  if (typeof options.onConnection !== 'function')
    throw new InvalidArgumentError('onConnection must be a function', 'ERR_INVALID_ARG_TYPE');
  const registration = encodeRegistration(options.ports);
  // The agent applies the same checks; failing here names the caller's mistake.
  if (
    !Array.isArray(options.ports) ||
    options.ports.length === 0 ||
    !options.ports.every((p) => Number.isInteger(p) && p > 0 && p < 65536)
  )
    throw new InvalidArgumentError('ports must be a non-empty array of TCP ports', 'ERR_INVALID_ARG_VALUE');
  let transport: SeqpacketTransport;
  try {
    transport = SeqpacketTransport.connect(options.agent, 'migration agent');
  } catch (error) {
    throw new HandoverError(
      `cannot reach the agent at ${options.agent}: ${(error as Error).message}`,
      'ERR_HANDOVER_CONNECT',
      error,
    );
  }
  try {
    transport.send(registration);
    const answer = await receiveJson(transport, options.signal);
    if (!Array.isArray(answer.registered))
      throw new HandoverError(
        `the agent refused the registration: ${String(answer.refused ?? 'no reason')}`,
        'ERR_HANDOVER_REFUSED',
      );
    options.onRegistered?.();
    const start = await receiveJson(transport, options.signal);
    if (start.start !== 1) throw new HandoverError('unexpected message from the agent', 'ERR_HANDOVER_PROTOCOL');
    return await acceptHandover({
      from: transport,
      onConnection: options.onConnection,
      ...(options.signal !== undefined ? { signal: options.signal } : {}),
      ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
    });
  } finally {
    transport.close();
  }
}
