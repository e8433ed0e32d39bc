/**
 * The demo's own control link between the orchestrator (runDemo) and its server and client
 * processes: newline-delimited JSON requests and replies over a unix stream socket in the demo's
 * state directory (unix sockets are not tied to a network namespace, so every process reaches it).
 * Not used by the CRIU-migrated server: an open connection to a process outside the dumped tree
 * would make the dump fail, so that one is driven by signals and files instead.
 */
import * as net from 'node:net';

import { DemoError } from './errors';

type Handler = (body: Record<string, unknown>) => unknown;

export class ControlLink {
  private nextId = 1;
  private buffered = '';
  private readonly pending = new Map<
    number,
    { resolve: (v: Record<string, unknown>) => void; reject: (e: Error) => void }
  >();
  private closedError: Error | undefined;

  constructor(
    readonly socket: net.Socket,
    private readonly handler: Handler = () => ({}),
  ) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.closedError = new DemoError('control link closed', 'ERR_DEMO_CONTROL_CLOSED');
      for (const waiter of this.pending.values()) waiter.reject(this.closedError);
      this.pending.clear();
    });
  }

  static connect(path: string, handler?: Handler): Promise<ControlLink> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ path });
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.off('error', reject);
        resolve(new ControlLink(socket, handler));
      });
    });
  }

  request<T = Record<string, unknown>>(body: Record<string, unknown>, timeoutMs = 120000): Promise<T> {
    if (this.closedError) return Promise.reject(this.closedError);
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(
          new DemoError(
            `control request ${String(body.cmd)} timed out after ${timeoutMs} ms`,
            'ERR_DEMO_CONTROL_TIMEOUT',
          ),
        );
      }, timeoutMs);
      this.pending.set(id, {
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v as T);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.socket.write(`${JSON.stringify({ t: 'req', id, body })}\n`);
    });
  }

  close(): void {
    this.socket.destroy();
  }

  private onData(chunk: string): void {
    this.buffered += chunk;
    for (let nl = this.buffered.indexOf('\n'); nl >= 0; nl = this.buffered.indexOf('\n')) {
      const line = this.buffered.slice(0, nl);
      this.buffered = this.buffered.slice(nl + 1);
      if (line !== '')
        this.onMessage(
          JSON.parse(line) as { t: string; id: number; body?: Record<string, unknown>; error?: string; code?: string },
        );
    }
  }

  private onMessage(message: {
    t: string;
    id: number;
    body?: Record<string, unknown>;
    error?: string;
    code?: string;
  }): void {
    if (message.t === 'res') {
      const waiter = this.pending.get(message.id);
      this.pending.delete(message.id);
      if (!waiter) return;
      if (message.error !== undefined)
        waiter.reject(
          new DemoError(
            message.error,
            typeof message.code === 'string' && message.code !== '' ? message.code : 'ERR_DEMO_REMOTE',
          ),
        );
      else waiter.resolve(message.body ?? {});
      return;
    }
    Promise.resolve()
      .then(() => this.handler(message.body ?? {}))
      .then(
        (body) => this.write({ t: 'res', id: message.id, body: (body ?? {}) as Record<string, unknown> }),
        (error: Error) =>
          this.write({
            t: 'res',
            id: message.id,
            error: `${(error as { code?: string }).code ?? ''} ${error.message}`.trim(),
            code: (error as { code?: string }).code ?? '',
          }),
      );
  }

  private write(message: Record<string, unknown>): void {
    if (!this.socket.destroyed) this.socket.write(`${JSON.stringify(message)}\n`);
  }
}
