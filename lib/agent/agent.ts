/**
 * The migration agent on the target host: a mutual-TLS 1.3 server (lib/transport/tls.ts) that
 * receives a dumped process tree's images and restores it here, one migration at a time. Only a
 * peer whose certificate chains to the CA reaches any code of ours; before that nothing is
 * written, locked or started. The agent decides what it restores: the service address must lie
 * in allow.addresses on a device in allow.devices, the images fit its limits, CRIU's version is
 * its own. Session: HELLO → WELCOME | REFUSE; files; IMAGES_END → IMAGES_OK; RESTORE → RESTORED
 * | RESTORE_FAILED (see protocol.ts). RESTORE is the source's commit: once it arrives the agent
 * finishes the restore even if the channel drops. The per-migration directory is deleted when the
 * session ends, whatever the outcome (the source keeps its own copy for a rollback). A lazy
 * session (HELLO.lazyPages) carries CRIU's page stream on the channel after RESTORE and lasts
 * until every page arrived (page-stream.ts, lazy-session.ts).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type * as tls from 'node:tls';

import { Criu, locateCriu } from '../criu';
import { checkPipeSize } from '../migration/lazy-pages';
import { InvalidArgumentError } from '../errors';
import { checkTlsCredentials, createTlsServer, peerName, type TlsCredentials } from '../transport/tls';
import { FramedConnection } from '../transport/framed';
import { TransportError } from '../transport/errors';
import {
  AGENT_FRAME_FORMAT,
  AGENT_PROTOCOL_VERSION,
  AgentProtocolError,
  cidrContains,
  decodeEmpty,
  decodeHello,
  encodeBody,
  messageName,
  MIGRATION_ID,
  MSG,
  parseCidr,
  type Hello,
} from './protocol';
import type { NftablesLock } from '../soccr/nft-lock';
import { AppRegistry } from './app-registry';
import { finishLazySession } from './lazy-session';
import { PageChannel } from './page-stream';
import { receiveImages, type AgentLimits } from './receive';
import { HANDOVER_MAGIC, peekMagic, relayConnectionsHandover } from './relay';
import { EXTERNAL_DEVICES, prepareHold, restoreHere, sweepAgentHolds, type AgentRestored } from './restore';
import { resolveLimits, validateAgentOptions, type AgentEvent, type MigrationAgentOptions } from './options';

export type { AgentEvent, MigrationAgentOptions } from './options';

export interface MigrationAgent {
  /** Where it listens. */
  address: { host: string; port: number };
  /** Stops listening, ends the session in progress (a restore under way finishes first). Idempotent. */
  close(): Promise<void>;
  /** Resolves once closed (by close() or the signal). */
  closed: Promise<void>;
}

/** Between frames of a session (the source dumps between HELLO and its first FILE); a peer that stalls longer is dropped. */
const IDLE_TIMEOUT_MS = 300_000;
const RESTORE_TIMEOUT_MS = 120_000;
/** A lazy restore: CRIU's restore and then every page fetched over the channel. */
const LAZY_TIMEOUT_MS = 600_000;

type Route = (session: Session, hello: Hello) => Promise<void>;

class Session {
  dir: string | undefined;
  constructor(
    readonly agent: Agent,
    readonly channel: FramedConnection,
    readonly peer: string,
  ) {}

  emit(event: string, detail: Record<string, unknown> = {}): void {
    this.agent.emit({ event, peer: this.peer, ...detail });
  }

  async next(): Promise<{ type: number; id: number; payload: Buffer }> {
    return this.channel.receive(AbortSignal.any([AbortSignal.timeout(IDLE_TIMEOUT_MS), this.agent.stopping.signal]));
  }

  send(type: number, body: object): Promise<void> {
    return this.channel.send(type, 0, encodeBody(body));
  }

  async removeDir(): Promise<void> {
    if (this.dir === undefined) return;
    const dir = this.dir;
    this.dir = undefined;
    await fs.promises.rm(dir, { recursive: true, force: true });
  }
}

/**
 * The process route: images, then RESTORE. Lazy (HELLO.lazyPages): from RESTORE on, the channel
 * also carries the page stream (page-stream.ts), the restore is startLazyRestore's, and the
 * session lasts until every page arrived (lazy-session.ts).
 */
const processRoute: Route = async (session, hello) => {
  const { agent } = session;
  session.dir = path.join(agent.workDir, hello.migrationId);
  await fs.promises.mkdir(session.dir, { mode: 0o700 });
  // Made while the images arrive; deleted when the session ends without a restore that used it.
  const hold = prepareHold(hello.tuples);
  hold.catch(() => undefined);
  let holdUsed = false;
  try {
    await processImagesAndRestore(session, hello, hold, () => (holdUsed = true));
  } finally {
    if (!holdUsed) await hold.then((h) => h?.destroy()).catch(() => undefined);
  }
};

async function processImagesAndRestore(
  session: Session,
  hello: Hello,
  hold: Promise<NftablesLock | undefined>,
  used: () => void,
): Promise<void> {
  const { agent } = session;
  const dir = session.dir as string;
  const end = await receiveImages(dir, agent.limits, () => session.next());
  session.emit('images', { files: end.files, bytes: end.bytes });
  await session.send(MSG.IMAGES_OK, {});
  const restore = await session.next();
  if (restore.type !== MSG.RESTORE) throw new AgentProtocolError(`expected RESTORE, got ${messageName(restore.type)}`);
  decodeEmpty(restore.payload, 'RESTORE');
  session.emit('restore', { state: 'start', lazyPages: hello.lazyPages });
  // The attach point: nothing but page frames may follow RESTORE.
  const pages = hello.lazyPages ? new PageChannel(session.channel, { maxControlFrames: 0 }) : undefined;
  pages?.attach();
  const criuPath = locateCriu(agent.options.criuPath !== undefined ? { criuPath: agent.options.criuPath } : {}).path;
  // The source has committed: finish even if the channel drops (no signal from the session).
  let restored: AgentRestored;
  used();
  try {
    restored = await restoreHere({
      criu: agent.criu,
      dir,
      hold,
      tuples: hello.tuples,
      external: hello.external ?? [],
      ...(hello.moveAddress !== undefined ? { moveAddress: hello.moveAddress } : {}),
      emit: (event, detail) => session.emit('restore', { state: event, ...detail }),
      timeoutMs: RESTORE_TIMEOUT_MS,
      ...(pages !== undefined ? { lazy: { stream: pages.pages, criuPath, timeoutMs: LAZY_TIMEOUT_MS } } : {}),
    });
  } catch (error) {
    const e = error as { code: string; message: string };
    session.emit('restore', { state: 'failed', code: e.code, message: e.message });
    await session.send(MSG.RESTORE_FAILED, { code: e.code, message: e.message.slice(0, 4000) }).catch(() => undefined);
    return;
  }
  // The pid in the agent's pid namespace (where CRIU restored it).
  const { pid } = restored;
  session.emit('restore', { state: 'done', pid });
  await session.send(MSG.RESTORED, { pid }).catch(() => undefined);
  if (restored.lazy !== undefined && pages !== undefined)
    await finishLazySession(restored.lazy, pages, hello.moveAddress, (state, detail) =>
      session.emit('pages', { state, ...detail }),
    );
}

/** Routes by HELLO.route (a connections handover arrives with the handover protocol's own magic: Agent.relay). */
const ROUTES: Record<string, Route | undefined> = { process: processRoute };

class Agent {
  readonly stopping = new AbortController();
  readonly workDir: string;
  readonly limits: AgentLimits;
  criu!: Criu;
  criuVersion = '';
  readonly kernel = os.release();
  busy = false;
  registry: AppRegistry | undefined;
  private readonly sessions = new Set<Promise<void>>();

  constructor(readonly options: MigrationAgentOptions) {
    this.workDir = path.resolve(options.workDir);
    this.limits = resolveLimits(options.limits);
  }

  emit(event: AgentEvent): void {
    try {
      this.options.onEvent?.(event);
    } catch {
      // a throwing listener must not break the agent
    }
  }

  refusal(hello: Hello): { code: string; reason: string } | undefined {
    const handler = ROUTES[hello.route];
    if (hello.version !== AGENT_PROTOCOL_VERSION)
      return {
        code: 'ERR_AGENT_VERSION',
        reason: `protocol version ${hello.version}, agent speaks ${AGENT_PROTOCOL_VERSION}`,
      };
    if (handler === undefined)
      return { code: 'ERR_AGENT_ROUTE_UNSUPPORTED', reason: `route '${hello.route}' is not served by this agent` };
    if (hello.lazyPages)
      try {
        checkPipeSize();
      } catch (error) {
        return { code: (error as { code: string }).code, reason: (error as Error).message };
      }
    if (hello.criuVersion !== this.criuVersion)
      return {
        code: 'ERR_AGENT_CRIU_VERSION',
        reason: `CRIU ${hello.criuVersion} on the source, ${this.criuVersion} here: both hosts need the same CRIU`,
      };
    const strange = (hello.external ?? []).find((e) => !EXTERNAL_DEVICES.has(e.path));
    if (strange !== undefined)
      return {
        code: 'ERR_AGENT_EXTERNAL_FILE',
        reason: `the process holds ${strange.path} from outside its mount namespace; the agent gives back only ${[...EXTERNAL_DEVICES].join(', ')} (start it with its stdio on those)`,
      };
    const move = hello.moveAddress;
    if (move !== undefined) {
      const { address } = parseCidr(move.cidr, 'moveAddress.cidr');
      const allowed = this.options.allow?.addresses ?? [];
      if (!allowed.some((range) => cidrContains(range, address)))
        return { code: 'ERR_AGENT_ADDRESS_NOT_ALLOWED', reason: `this agent may not take over ${move.cidr}` };
      if (!(this.options.allow?.devices ?? []).includes(move.device))
        return { code: 'ERR_AGENT_DEVICE_NOT_ALLOWED', reason: `this agent may not use device ${move.device}` };
    }
    return undefined;
  }

  /** One authenticated connection: the agent's protocol, or a connections handover (its own magic). Never throws. */
  async serve(socket: tls.TLSSocket): Promise<void> {
    const peer = `${peerName(socket) ?? '?'}@${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`;
    socket.on('error', () => undefined);
    const magic = await peekMagic(socket, IDLE_TIMEOUT_MS).catch(() => undefined);
    if (magic === undefined) {
      socket.destroy();
      return;
    }
    if (magic === HANDOVER_MAGIC) return this.relay(socket, peer);
    const channel = new FramedConnection(socket, AGENT_FRAME_FORMAT);
    const session = new Session(this, channel, peer);
    socket.on('error', () => undefined);
    if (this.busy) {
      session.emit('refused', { code: 'ERR_AGENT_BUSY' });
      await session.send(MSG.REFUSE, { code: 'ERR_AGENT_BUSY', reason: 'a migration is in progress' }).catch(() => {});
      channel.close();
      return;
    }
    this.busy = true;
    try {
      const first = await session.next();
      if (first.type !== MSG.HELLO) throw new AgentProtocolError(`expected HELLO, got ${messageName(first.type)}`);
      const hello = decodeHello(first.payload);
      const refusal = this.refusal(hello);
      session.emit('hello', { migrationId: hello.migrationId, route: hello.route, tuples: hello.tuples.length });
      if (refusal !== undefined) {
        session.emit('refused', refusal);
        await session.send(MSG.REFUSE, refusal);
        return;
      }
      await session.send(MSG.WELCOME, { criuVersion: this.criuVersion, kernel: this.kernel });
      await (ROUTES[hello.route] as Route)(session, hello);
    } catch (error) {
      const e = error as { code?: string; message?: string };
      const code = typeof e.code === 'string' && /^[A-Z][A-Z0-9_]{0,63}$/.test(e.code) ? e.code : 'ERR_AGENT_FAILED';
      session.emit('error', { code, message: e.message ?? String(error) });
      if (!(error instanceof TransportError))
        await session.send(MSG.ERROR, { code, message: (e.message ?? 'failed').slice(0, 4000) }).catch(() => {});
    } finally {
      await session.removeDir().catch(() => undefined);
      channel.close();
      this.busy = false;
      session.emit('session-end');
    }
  }

  /** The connections route: the handover is accepted here and its connections passed to the registered application. */
  async relay(socket: tls.TLSSocket, peer: string): Promise<void> {
    const registry = this.registry;
    const emit = (event: string, detail: Record<string, unknown> = {}): void =>
      this.emit({ event, peer, route: 'connections', ...detail });
    const refusal =
      registry === undefined
        ? 'this agent serves no connections route (no --app-socket)'
        : this.busy
          ? 'a migration is in progress'
          : registry.ports().length === 0
            ? 'no application is registered with the agent'
            : undefined;
    if (refusal !== undefined || registry === undefined) {
      emit('refused', { reason: refusal });
      // The source reads a closed channel before WELCOME as a refusal and resumes its connections.
      socket.destroy();
      return;
    }
    this.busy = true;
    try {
      emit('hello');
      const result = await relayConnectionsHandover(socket, registry, {
        signal: this.stopping.signal,
        onEvent: (event) => this.emit({ peer, ...event }),
      });
      emit('relayed', { ...result });
    } catch (error) {
      const e = error as { code?: string; message?: string };
      emit('error', { code: e.code ?? 'ERR_AGENT_FAILED', message: e.message ?? String(error) });
    } finally {
      // The handover closed its channel gracefully (its FIN after the last frame); only a peer that
      // never ends is cut off.
      setTimeout(() => socket.destroy(), 5000).unref();
      this.busy = false;
      emit('session-end');
    }
  }

  track(promise: Promise<void>): void {
    this.sessions.add(promise);
    void promise.finally(() => this.sessions.delete(promise));
  }

  async drain(): Promise<void> {
    await Promise.all([...this.sessions]);
  }
}

/** Starts the agent (see the file comment); resolves once it listens. */
export async function startMigrationAgent(options: MigrationAgentOptions): Promise<MigrationAgent> {
  validateAgentOptions(options);
  checkTlsCredentials(options.tls, 'options.tls');
  const agent = new Agent(options);
  const stat = await fs.promises.stat(agent.workDir).catch(() => undefined);
  if (stat === undefined || !stat.isDirectory())
    throw new InvalidArgumentError(`options.workDir ${agent.workDir} is not a directory`, 'ERR_INVALID_ARG_VALUE');
  await fs.promises.chmod(agent.workDir, 0o700);
  // Directories of migrations an earlier agent did not finish (SIGKILL, power loss).
  const stale = (await fs.promises.readdir(agent.workDir)).filter((name) => MIGRATION_ID.test(name));
  for (const name of stale) await fs.promises.rm(path.join(agent.workDir, name), { recursive: true, force: true });
  if (stale.length > 0) agent.emit({ event: 'swept', directories: stale.length });
  const criuPath = locateCriu(options.criuPath !== undefined ? { criuPath: options.criuPath } : {}).path;
  agent.criu = new Criu({ criuPath });
  try {
    agent.criuVersion = (
      await agent.criu.version({ timeoutMs: 30_000, ...(options.signal ? { signal: options.signal } : {}) })
    ).text;
    const swept = await sweepAgentHolds(options.signal);
    if (swept.length > 0) agent.emit({ event: 'swept', tables: swept });
  } catch (error) {
    await agent.criu.close();
    throw error;
  }
  if (options.appSocket !== undefined) {
    try {
      agent.registry = new AppRegistry({
        path: options.appSocket,
        ...(options.appUids !== undefined ? { allowUids: options.appUids } : {}),
        onEvent: (event) => agent.emit(event),
      });
    } catch (error) {
      await agent.criu.close();
      throw error;
    }
  }
  const server = createTlsServer({
    tls: options.tls as TlsCredentials,
    onSecureConnection: (socket) => agent.track(agent.serve(socket)),
    onClientError: (error, remote) =>
      agent.emit({
        event: 'tls-refused',
        remote: `${remote.address ?? '?'}:${remote.port ?? 0}`,
        reason: (error as { code?: string }).code ?? error.message,
      }),
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.listen.port, options.listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  }).catch(async (error: unknown) => {
    agent.registry?.close();
    await agent.criu.close();
    throw error;
  });
  const bound = server.address() as { address: string; port: number };
  let resolveClosed!: () => void;
  const closed = new Promise<void>((resolve) => (resolveClosed = resolve));
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closing ??= (async () => {
      agent.stopping.abort(new TransportError('the agent is closing', { code: 'ERR_AGENT_CLOSED' }));
      options.signal?.removeEventListener('abort', onAbort);
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await agent.drain();
      agent.registry?.close();
      await agent.criu.close();
      agent.emit({ event: 'closed' });
      resolveClosed();
    })());
  const onAbort = (): void => void close();
  if (options.signal?.aborted) void close();
  else options.signal?.addEventListener('abort', onAbort, { once: true });
  agent.emit({ event: 'listening', host: bound.address, port: bound.port, criuVersion: agent.criuVersion });
  return { address: { host: bound.address, port: bound.port }, close, closed };
}
