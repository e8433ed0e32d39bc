/**
 * The CRIU request/response state machine (lib/criu/connection.ts) against an in-memory transport:
 * replies, NOTIFY round trips, handler failures, aborts, malformed or unexpected replies, and
 * transport failures mapped to the CRIU half's codes. No socket, no CRIU, no root; the same paths
 * over a real socket and a scripted swrk are in test/criu/client-protocol.test.ts.
 */
import { CriuConnection } from '../../../lib/criu/connection';
import { CriuReqType, type CriuRequestMessage } from '../../../lib/criu/messages';
import { TransportError } from '../../../lib/transport/errors';
import { FakeTransport, type Responder } from './fake-transport';

const NOTIFY = CriuReqType.NOTIFY;

function over(responder: Responder): { connection: CriuConnection; fake: FakeTransport } {
  const fake = new FakeTransport(responder);
  return { connection: CriuConnection.over(fake, 'fake criu'), fake };
}

/** Answers the first request with the given notifications, one per ack, then `final`. */
function notifyingThen(scripts: { script: string; pid?: number }[], final: CriuReqType): Responder {
  let next = 0;
  return (request, fake) => {
    if (next < scripts.length) {
      fake.reply({ type: NOTIFY, success: true, notify: scripts[next++] });
      return;
    }
    fake.reply({ type: final, success: true });
  };
}

const acks = (fake: FakeTransport): (boolean | undefined)[] =>
  fake.sent.filter((s) => s.request.type === NOTIFY).map((s) => s.request.notifySuccess);

describe('CriuConnection.request (in-memory transport)', () => {
  it('sends the request and returns the reply, success or not', async () => {
    const { connection, fake } = over((request, f) =>
      f.reply({ type: request.type, success: request.type === CriuReqType.VERSION }),
    );
    const ok = await connection.request({ type: CriuReqType.VERSION });
    expect(ok).toEqual({ response: { type: CriuReqType.VERSION, success: true } });
    const failed = await connection.request({ type: CriuReqType.CHECK });
    expect(failed.response).toEqual({ type: CriuReqType.CHECK, success: false });
    expect(fake.sent.map((s) => s.request.type)).toEqual([CriuReqType.VERSION, CriuReqType.CHECK]);
  });

  it('accepts EMPTY as the reply to anything, and a PAGE_SERVER reply to PAGE_SERVER_CHLD', async () => {
    const { connection } = over((request, f) =>
      f.reply({
        type: request.type === CriuReqType.PAGE_SERVER_CHLD ? CriuReqType.PAGE_SERVER : CriuReqType.EMPTY,
        success: false,
      }),
    );
    expect((await connection.request({ type: CriuReqType.CHECK })).response.type).toBe(CriuReqType.EMPTY);
    const chld: CriuRequestMessage = { type: CriuReqType.PAGE_SERVER_CHLD, keepOpen: true };
    expect((await connection.request(chld)).response.type).toBe(CriuReqType.PAGE_SERVER);
  });

  it('answers each NOTIFY with the handler for its script (or default), acks success, records them in order', async () => {
    const { connection, fake } = over(
      notifyingThen(
        [{ script: 'pre-dump' }, { script: 'post-restore', pid: 42 }, { script: 'network-lock' }],
        CriuReqType.RESTORE,
      ),
    );
    const seen: string[] = [];
    const notifications: { script: string; pid?: number }[] = [];
    const outcome = await connection.request(
      { type: CriuReqType.RESTORE },
      {
        notifications,
        handlers: {
          'post-restore': (event) => {
            seen.push(`post-restore ${event.pid}`);
          },
          default: async (event) => {
            await Promise.resolve();
            seen.push(event.script);
          },
        },
      },
    );
    expect(outcome).toEqual({ response: { type: CriuReqType.RESTORE, success: true } });
    expect(seen).toEqual(['pre-dump', 'post-restore 42', 'network-lock']);
    expect(notifications).toEqual([
      { script: 'pre-dump' },
      { script: 'post-restore', pid: 42 },
      { script: 'network-lock' },
    ]);
    expect(acks(fake)).toEqual([true, true, true]);
  });

  it('sends what query-ext-files returns as opts.external', async () => {
    const { connection, fake } = over(notifyingThen([{ script: 'query-ext-files' }], CriuReqType.RESTORE));
    await connection.request(
      { type: CriuReqType.RESTORE },
      { handlers: { 'query-ext-files': () => ({ external: ['veth[eth0]:ext0'] }) } },
    );
    const ack = fake.sent.find((s) => s.request.type === NOTIFY)?.request;
    expect(ack).toMatchObject({ notifySuccess: true, opts: { external: ['veth[eth0]:ext0'] } });
  });

  it('a throwing handler acks failure (later notifications too) and comes back as handlerError', async () => {
    const { connection, fake } = over(
      notifyingThen([{ script: 'pre-dump' }, { script: 'post-dump' }], CriuReqType.DUMP),
    );
    const cause = new Error('no, thanks');
    let calls = 0;
    const outcome = await connection.request(
      { type: CriuReqType.DUMP },
      {
        handlers: {
          default: () => {
            calls++;
            throw cause;
          },
        },
      },
    );
    expect(calls).toBe(1);
    expect(acks(fake)).toEqual([false, false]);
    expect(outcome.response).toEqual({ type: CriuReqType.DUMP, success: true });
    expect(outcome.handlerError).toMatchObject({ code: 'ERR_CRIU_NOTIFY_HANDLER', script: 'pre-dump', cause });
  });

  it('an abort during a handler acks failure at once, without waiting for the handler', async () => {
    const controller = new AbortController();
    const { connection, fake } = over(notifyingThen([{ script: 'post-dump' }], CriuReqType.DUMP));
    const reason = new Error('stop');
    const outcome = await connection.request(
      { type: CriuReqType.DUMP },
      {
        signal: controller.signal,
        handlers: {
          'post-dump': () => {
            controller.abort(reason);
            return new Promise<void>(() => undefined); // never settles
          },
        },
      },
    );
    expect(acks(fake)).toEqual([false]);
    expect(outcome.handlerError).toMatchObject({ code: 'ERR_CRIU_NOTIFY_HANDLER', cause: reason });
  });

  it('a reply of another type is ERR_CRIU_PROTOCOL and the transport is closed', async () => {
    const { connection, fake } = over((_request, f) => f.reply({ type: CriuReqType.RESTORE, success: true }));
    await expect(connection.request({ type: CriuReqType.DUMP })).rejects.toMatchObject({
      name: 'CriuProtocolError',
      code: 'ERR_CRIU_PROTOCOL',
    });
    expect(fake.isClosed).toBe(true);
  });

  it('bytes that are not a criu_resp are ERR_CRIU_PROTOCOL and the transport is closed', async () => {
    const { connection, fake } = over((_request, f) => f.reply(Buffer.from([0x08])));
    await expect(connection.request({ type: CriuReqType.VERSION })).rejects.toMatchObject({
      code: 'ERR_CRIU_PROTOCOL',
    });
    expect(fake.isClosed).toBe(true);
  });

  it('EOF before the reply is CriuConnectionError ERR_CRIU_DISCONNECTED, the transport error as cause', async () => {
    const { connection } = over((_request, f) => f.end());
    const error = await connection.request({ type: CriuReqType.CHECK }).catch((e: unknown) => e);
    expect(error).toMatchObject({ name: 'CriuConnectionError', code: 'ERR_CRIU_DISCONNECTED' });
    expect((error as Error).message).toMatch(/^fake criu closed without replying to CHECK: /);
    expect((error as Error).cause).toMatchObject({ name: 'TransportError', code: 'ERR_TRANSPORT_DISCONNECTED' });
  });

  it('a socket error keeps its errno code and syscall; a closed transport is ERR_CRIU_TRANSPORT_CLOSED', async () => {
    const reset = new TransportError('fake: receive: ECONNRESET', {
      code: 'ECONNRESET',
      errno: -104,
      syscall: 'recvmsg',
    });
    const broken = over((_request, f) => f.end(reset)).connection;
    await expect(broken.request({ type: CriuReqType.CHECK })).rejects.toMatchObject({
      name: 'CriuConnectionError',
      code: 'ECONNRESET',
      errno: -104,
      syscall: 'recvmsg',
    });

    const { connection, fake } = over(() => undefined);
    fake.close();
    await expect(connection.request({ type: CriuReqType.CHECK })).rejects.toMatchObject({
      name: 'CriuConnectionError',
      code: 'ERR_CRIU_TRANSPORT_CLOSED',
    });
  });

  it('a failed ack send ends the call with the handler error when there is one', async () => {
    const { connection, fake } = over((request, f) => {
      if (request.type !== NOTIFY) f.reply({ type: NOTIFY, success: true, notify: { script: 'pre-dump' } });
    });
    const cause = new Error('handler failed');
    const pending = connection.request(
      { type: CriuReqType.DUMP },
      {
        handlers: {
          'pre-dump': () => {
            fake.failNextSend = new TransportError('fake: send: EPIPE', { code: 'EPIPE', syscall: 'sendmsg' });
            throw cause;
          },
        },
      },
    );
    await expect(pending).rejects.toMatchObject({ code: 'ERR_CRIU_NOTIFY_HANDLER', cause });
  });

  it('destroy() closes the transport; a request after it is ERR_CRIU_TRANSPORT_CLOSED', async () => {
    const { connection, fake } = over(() => undefined);
    await connection.destroy();
    expect(fake.isClosed).toBe(true);
    await expect(connection.request({ type: CriuReqType.VERSION })).rejects.toMatchObject({
      name: 'CriuConnectionError',
      code: 'ERR_CRIU_TRANSPORT_CLOSED',
    });
  });
});
