/**
 * One conversation with CRIU over a message transport (to a swrk we spawned, or to `criu service`):
 * the request/response state machine, NOTIFY round trips included. A swrk connection serves one
 * request (or one keep_open / pre-dump sequence) and then swrk exits.
 */
import { describeValue } from '../errors';
import { TransportError } from '../transport/errors';
import { SeqpacketTransport, closeFdQuietly, type MessageTransport } from '../transport/seqpacket';
import { settlesWithin, type CallScope } from './call';
import { decodeResponse, encodeRequest } from './codec';
import { CriuConnectionError, CriuNotifyHandlerError, CriuProtocolError, criuTransportError } from './errors';
import { CriuReqType, reqTypeName, type CriuRequestMessage, type CriuResponseMessage } from './messages';
import { runNotifyHandlerUntil, type CriuNotifyHandlers, type NotifyOutcome } from './notify';
import type { CriuNotifyRecord } from './replies';
import { describeExit, spawnSwrk, type SwrkExit, type SwrkProcess } from './swrk';

export interface RequestOptions {
  handlers?: CriuNotifyHandlers;
  /** Every notification seen, in arrival order (the client returns it to the caller). */
  notifications?: CriuNotifyRecord[];
  signal?: AbortSignal;
}

/** The final reply plus the first notify handler failure, if any. */
export interface RequestOutcome {
  response: CriuResponseMessage;
  handlerError?: CriuNotifyHandlerError;
}

/**
 * How long CRIU may take to unwind after an abort answered its pending notification with failure,
 * before it is killed anyway.
 */
const ABORT_GRACE_MS = 3000;

/** How long swrk may live on after its socket ended before it is killed as misbehaving. */
const EOF_EXIT_GRACE_MS = 3000;

/** The reply type CRIU answers `type` with (PAGE_SERVER_CHLD gets a PAGE_SERVER-typed reply). */
function replyTypeOf(type: CriuReqType): CriuReqType {
  return type === CriuReqType.PAGE_SERVER_CHLD ? CriuReqType.PAGE_SERVER : type;
}

export class CriuConnection {
  private destroyed = false;
  /** CRIU is waiting for our answer to a notification (a handler is running). */
  private inNotify = false;
  /** A RESTORE's post-restore was acknowledged: CRIU is finishing it. */
  private pastPostRestore = false;
  private graceTimer: NodeJS.Timeout | undefined;
  /**
   * Runs right before destroy() SIGKILLs a swrk that has not exited: the client's recovery policy
   * (recovery-policy.ts) acts there, before CRIU's death can resume a half-dumped task.
   */
  beforeKill: (() => void) | undefined;
  /**
   * CRIU's side ended the connection (EOF, reset) before replying: for a `criu service` worker,
   * which holds its connection until it exits, the sign that it is gone.
   */
  endedByPeer = false;

  private constructor(
    readonly transport: MessageTransport,
    readonly swrk: SwrkProcess | undefined,
    readonly description: string,
  ) {}

  /** Spawns `criu swrk 3` (extraFds become its fds 4, 5, ...). */
  static async swrk(
    criuPath: string,
    extraFds: readonly number[] = [],
    outsideOurTree = false,
  ): Promise<CriuConnection> {
    const swrk = await spawnSwrk(criuPath, extraFds, { outsideOurTree });
    return new CriuConnection(swrk.transport, swrk, `criu swrk (pid ${swrk.pid})`);
  }

  /** Connects to `criu service --address <address>`. */
  static service(address: string): CriuConnection {
    const description = `criu service at ${address}`;
    let transport: SeqpacketTransport;
    try {
      transport = SeqpacketTransport.connect(address, description);
    } catch (error) {
      throw criuTransportError(error, 'criu service');
    }
    return new CriuConnection(transport, undefined, description);
  }

  /** A connection over any transport (no swrk of ours behind it). */
  static over(transport: MessageTransport, description = 'criu'): CriuConnection {
    return new CriuConnection(transport, undefined, description);
  }

  /** Ties the connection to a call: killed on abort/timeout, closed when the call settles. */
  bindTo(scope: CallScope): () => Promise<void> {
    const onAbort = (): void => {
      // While CRIU waits on a notification it is at a safe point: request() answers "failed" and
      // CRIU unwinds (unfreezes the task, unlocks and repairs its connections). Killing CRIU there
      // instead would leave TCP connections in repair mode behind its network lock. Elsewhere
      // there is no safe point: SIGKILL now.
      // Past post-restore a restore cannot be undone without harm: CRIU is unlocking the network
      // and taking the sockets out of repair, and a half-unlocked tree killed now would leave its
      // peers to meet RSTs. Let CRIU finish (bounded) instead.
      if (this.inNotify || this.pastPostRestore) {
        this.graceTimer = setTimeout(() => void this.destroy(), ABORT_GRACE_MS);
        this.graceTimer.unref();
      } else {
        void this.destroy();
      }
    };
    scope.signal.addEventListener('abort', onAbort, { once: true });
    const cleanup = async (): Promise<void> => {
      scope.signal.removeEventListener('abort', onAbort);
      if (scope.signal.aborted) await this.destroy();
      else await this.close();
    };
    scope.defer(cleanup);
    return cleanup;
  }

  /**
   * Sends `request` and reads until its reply, answering NOTIFY messages with the handlers.
   * Rejects with CriuConnectionError when CRIU goes away without replying (with swrk's exit status
   * and stderr), CriuProtocolError on a malformed or unexpected reply. A reply with success=false
   * is returned, not thrown: the caller knows which error to build.
   */
  async request(request: CriuRequestMessage, options: RequestOptions = {}, fds?: number[]): Promise<RequestOutcome> {
    await this.send(encodeRequest(request), request.type, undefined, fds);
    let handlerError: CriuNotifyHandlerError | undefined;
    for (;;) {
      let message;
      try {
        message = await this.transport.receive();
      } catch (error) {
        throw handlerError ?? (await this.explainFailure(error, request.type));
      }
      let response: CriuResponseMessage;
      try {
        response = decodeResponse(message.data);
      } catch (error) {
        message.fds.forEach(closeFdQuietly);
        await this.destroy();
        throw error;
      }
      if (response.type !== CriuReqType.NOTIFY || request.type === CriuReqType.NOTIFY) {
        message.fds.forEach(closeFdQuietly);
        const expected = replyTypeOf(request.type);
        if (response.type !== request.type && response.type !== expected && response.type !== CriuReqType.EMPTY) {
          await this.destroy();
          throw new CriuProtocolError(
            `${this.description}: sent ${reqTypeName(request.type)}, got a ${reqTypeName(response.type)} reply`,
          );
        }
        return handlerError ? { response, handlerError } : { response };
      }

      const script = response.notify?.script ?? '';
      const pid = response.notify?.pid;
      options.notifications?.push(pid !== undefined ? { script, pid } : { script });
      const fd = message.fds[0];
      message.fds.slice(1).forEach(closeFdQuietly);
      // After a failed handler CRIU is already aborting; later notifications are acked as failed.
      let outcome: NotifyOutcome;
      if (handlerError) {
        outcome = { ok: false, error: handlerError };
      } else {
        this.inNotify = true;
        try {
          outcome = await runNotifyHandlerUntil(options.handlers, {
            script,
            ...(pid !== undefined ? { pid } : {}),
            ...(fd !== undefined ? { fd } : {}),
            signal: options.signal ?? new AbortController().signal,
          });
        } finally {
          this.inNotify = false;
        }
      }
      if (fd !== undefined) closeFdQuietly(fd);
      if (!outcome.ok && !handlerError) handlerError = new CriuNotifyHandlerError(script, outcome.error);
      const ack: CriuRequestMessage = { type: CriuReqType.NOTIFY, notifySuccess: outcome.ok };
      if (outcome.ok && outcome.external !== undefined) ack.opts = { imagesDirFd: -1, external: outcome.external };
      await this.send(encodeRequest(ack), request.type, handlerError);
      if (outcome.ok && script === 'post-restore' && request.type === CriuReqType.RESTORE) this.pastPostRestore = true;
    }
  }

  /** Sends one message; a failure becomes `pending` (a handler's error) or the explained one. */
  private async send(
    bytes: Uint8Array,
    requestType: number,
    pending: Error | undefined,
    fds?: number[],
  ): Promise<void> {
    try {
      this.transport.send(bytes, fds);
    } catch (error) {
      throw pending ?? (await this.explainFailure(error, requestType));
    }
  }

  /**
   * Turns a transport failure into the error the caller sees: for swrk, waits for its exit and
   * reports code or signal and the tail of its stderr.
   */
  private async explainFailure(error: unknown, requestType: number): Promise<Error> {
    const what = reqTypeName(requestType);
    if (this.destroyed) return criuTransportError(error, this.description);
    if ((error as { code?: unknown } | null)?.code !== 'ERR_TRANSPORT_CLOSED') this.endedByPeer = true;
    if (this.swrk?.outsideOurTree) {
      return new CriuConnectionError(
        `criu swrk (started outside our process tree) ended without replying to ${what}; its exit status is unknown`,
        { code: 'ERR_CRIU_EXITED', cause: error },
      );
    }
    if (this.swrk) {
      // swrk closes its socket only by exiting. A socket that reads as ended while swrk lives on
      // means it sent an empty message (recv() cannot tell that from EOF) or shut the socket
      // down: a protocol violation, and waiting for its exit could take forever.
      if (!(await settlesWithin(this.swrk.exited, EOF_EXIT_GRACE_MS))) {
        await this.destroy();
        return new CriuProtocolError(
          `${this.description}: the socket ended (an empty message or a shutdown) but swrk did not exit within ${EOF_EXIT_GRACE_MS} ms; killed it`,
          { cause: error },
        );
      }
      const exit: SwrkExit = await this.swrk.exited;
      const stderr = this.swrk.stderrTail().trim();
      return new CriuConnectionError(
        `${this.description} ended without replying to ${what} (${describeExit(exit)})${stderr ? `; stderr: ${stderr.slice(-2000)}` : ''}`,
        { code: 'ERR_CRIU_EXITED', exitCode: exit.code, signal: exit.signal, cause: error },
      );
    }
    const context = `${this.description} closed without replying to ${what}`;
    if (error instanceof TransportError) return criuTransportError(error, context);
    // A transport of the caller's that throws something else: still a connection failure.
    const code = (error as { code?: unknown } | null)?.code;
    return new CriuConnectionError(`${context}: ${error instanceof Error ? error.message : describeValue(error)}`, {
      code: typeof code === 'string' ? code : 'ERR_CRIU_DISCONNECTED',
      cause: error,
    });
  }

  /** Closes our end; swrk sees EOF and exits. Resolves once it is reaped. Idempotent. */
  async close(): Promise<SwrkExit | undefined> {
    clearTimeout(this.graceTimer);
    this.transport.close();
    return this.swrk?.exited;
  }

  /** SIGKILLs swrk (if still running), reaps it and closes the socket. Idempotent. */
  async destroy(): Promise<SwrkExit | undefined> {
    clearTimeout(this.graceTimer);
    this.destroyed = true;
    this.transport.close();
    if (this.swrk && this.swrk.exitStatus() === undefined && this.beforeKill) {
      const hook = this.beforeKill;
      this.beforeKill = undefined;
      try {
        hook();
      } catch {
        // best effort: the kill must happen regardless
      }
    }
    if (this.swrk) return this.swrk.kill();
    return undefined;
  }
}
