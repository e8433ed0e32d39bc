/**
 * migrateProcess to another host ({ to: agent }): dump here into a private directory, send the
 * images to the agent over mutual TLS (lib/agent/protocol.ts), give up the service address, send
 * RESTORE, and after RESTORED delete CRIU's lock and the local images. With lazyPages the memory
 * pages follow the restore over the same channel (process-remote-lazy.ts).
 *
 * One owner at every moment:
 * - before RESTORE is sent (transfer, address removal, an abort) or on RESTORE_FAILED (the agent
 *   has undone its side): the address comes back and the local images are restored here
 *   (process-rollback.ts);
 * - the channel lost after RESTORE was sent: the agent may have restored, so nothing is rolled
 *   back (two owners would answer the same connections). ERR_MIGRATION_UNCERTAIN, serverOn
 *   'unknown'; the local images and CRIU's lock table stay (the peers see drops, not RSTs).
 */
import { randomBytes } from 'node:crypto';
import * as os from 'node:os';

import { locateCriu, type CriuOptions } from '../criu';
import { addAddress, removeAddress } from '../sys/address';
import { FramedConnection, type Frame } from '../transport/framed';
import { connectTls, peerName } from '../transport/tls';
import {
  AGENT_FRAME_FORMAT,
  AGENT_PROTOCOL_VERSION,
  decodeFailureBody,
  decodeRefuse,
  decodeRestored,
  decodeWelcome,
  encodeBody,
  messageName,
  MSG,
  type Welcome,
} from '../agent/protocol';
import { wireTuplesFromProc } from '../agent/tuples';
import {
  checkNetns,
  checkTaskNetns,
  criuForTask,
  criuInNetns,
  processTcpSockets,
  type NetnsCriu,
  type TreeSockets,
  type TaskCriu,
} from './process-criu';
import { describeFailure, ProcessMigrationError, type ProcessMigrationPhase } from './process-errors';
import { pagesBytes, readDumpStats } from './process-images';
import { lockForMigration, lockingHandlers, type ConnectionLock } from './process-lock';
import { holdExternalFiles, type HeldFiles } from './process-mounts';
import { checkPid, dumpFailed, type ProcessMigrationOptions } from './process-options';
import {
  validateRemoteOptions,
  type RemoteProcessMigrationOptions,
  type RemoteProcessMigrationResult,
} from './process-remote-options';
import { migrateLazily } from './process-remote-lazy';
import { rollback, type RollbackContext } from './process-rollback';
import { keepOnlyLogs, prepareImagesDir, sendImages, uncertain } from './process-remote-send';

export type { RemoteProcessMigrationOptions, RemoteProcessMigrationResult } from './process-remote-options';

const CONNECT_TIMEOUT_MS = 10_000;
const REPLY_TIMEOUT_MS = 60_000;
/** RESTORE's answer: the agent waits up to 30 s for ids, 10 s for sockets, 120 s for CRIU. */
const RESTORE_REPLY_TIMEOUT_MS = 180_000;
const IP_TIMEOUT_MS = 10_000;

type Phases = RemoteProcessMigrationResult['phases'];

export class RemoteMigration implements RollbackContext {
  readonly phases: Phases = { dump: 0, transfer: 0, moveAddress: 0, restore: 0, total: 0 };
  base: CriuOptions;
  /** The connections' lock in the source namespace from the freeze on (process-lock.ts). */
  lock: ConnectionLock | undefined;
  /** base plus the external files given back (inherit_fd) to a rollback restore. */
  restoreBase: CriuOptions;
  held: HeldFiles | undefined;
  readonly signal: AbortSignal | undefined;
  /** The agent's host cannot be told apart from ours here: no local target namespace to clean. */
  readonly targetNs = { dev: -1, ino: -1 };
  readonly options: ProcessMigrationOptions;
  readonly migrationId = randomBytes(16).toString('hex');
  tuples = new Set<string>();
  /** The tree's sockets as read before the dump (the lock's engage compares with them). */
  sockets: TreeSockets = { inodes: new Set(), tuples: new Map() };
  moved = false;
  channel: FramedConnection | undefined;
  welcome: Welcome | undefined;
  agentName: string | undefined;

  constructor(
    readonly remote: RemoteProcessMigrationOptions,
    readonly dumper: TaskCriu,
    readonly source: NetnsCriu,
  ) {
    const signals = [remote.signal, remote.timeoutMs !== undefined ? AbortSignal.timeout(remote.timeoutMs) : undefined];
    const present = signals.filter((s): s is AbortSignal => s !== undefined);
    this.signal = present.length === 0 ? undefined : AbortSignal.any(present);
    this.base = { ...remote.criuOptions, tcpEstablished: true, networkLock: 'nftables' };
    this.restoreBase = this.base;
    this.options = {
      pid: remote.pid,
      imagesDir: remote.imagesDir ?? os.tmpdir(),
      ...(remote.source !== undefined ? { source: remote.source } : {}),
      moveAddressBack: () => this.addressBack(),
    };
  }

  emit(phase: string, detail?: Record<string, unknown>): void {
    try {
      this.remote.onProgress?.(detail === undefined ? { phase } : { phase, detail });
    } catch {
      // a throwing listener must not break a migration halfway
    }
  }

  async timed<T>(phase: keyof Phases, body: () => Promise<T>): Promise<T> {
    this.emit(phase, { state: 'start' });
    const started = performance.now();
    try {
      return await body();
    } finally {
      const ms = performance.now() - started;
      this.phases[phase] += ms;
      this.emit(phase, { state: 'end', ms: Math.round(ms * 10) / 10 });
    }
  }

  async releaseHold(): Promise<void> {
    // The agent removes its own hold; nothing to release here.
  }

  async releaseSourceLock(): Promise<void> {
    await this.lock?.releaseSource();
  }

  /** Our lock (CRIU's when ours cannot be made); the dump's network_lock goes with it. */
  async prepareLock(): Promise<void> {
    const criuLock = this.remote.lazyPages === true;
    ({ lock: this.lock, base: this.base } = await lockForMigration(this, this.remote.source?.netns, null, criuLock));
    this.restoreBase = this.base;
  }

  /** The dump's notification handlers: the lock engaged once CRIU froze the tree. */
  lockHandlers(): ReturnType<typeof lockingHandlers> {
    return lockingHandlers(this.lock as ConnectionLock, this.remote.pid, this.sockets, (tuples) => {
      this.tuples = tuples;
      this.emit('dump', { state: 'locked', connections: tuples.size });
    });
  }

  where(move: { cidr: string; device: string }): {
    cidr: string;
    device: string;
    netns?: string;
    timeoutMs: number;
  } {
    const netns = this.remote.source?.netns;
    return {
      cidr: move.cidr,
      device: move.device,
      timeoutMs: IP_TIMEOUT_MS,
      ...(netns !== undefined ? { netns } : {}),
    };
  }

  /** Puts the address back here and announces it (peers may have learnt the agent's MAC). */
  async addressBack(): Promise<void> {
    const move = this.remote.moveAddress;
    if (move !== undefined) await addAddress(this.where(move));
  }

  fail(code: string, phase: ProcessMigrationPhase, message: string, cause?: unknown): ProcessMigrationError {
    return new ProcessMigrationError(message, { code, phase, serverOn: 'source', pid: this.remote.pid, cause });
  }

  receive(timeoutMs: number): Promise<Frame> {
    const signals = [AbortSignal.timeout(timeoutMs), ...(this.signal ? [this.signal] : [])];
    return (this.channel as FramedConnection).receive(AbortSignal.any(signals));
  }

  /** The files the tree holds from outside its mount namespace, one per CRIU key (process-mounts.ts). */
  externalRefs(): Array<{ key: string; path: string }> {
    const refs = new Map<string, string>();
    for (const file of this.dumper.mounts.external) if (!refs.has(file.key)) refs.set(file.key, file.path);
    return [...refs].map(([key, p]) => ({ key, path: p }));
  }

  /** Just before the dump: `external` for it, and copies of those files for a rollback's inherit_fd. */
  externalFiles(): CriuOptions {
    const refs = this.externalRefs();
    if (refs.length === 0) return {};
    this.held = holdExternalFiles(this.dumper.mounts.external);
    this.restoreBase = { ...this.base, inheritFds: [...(this.base.inheritFds ?? []), ...this.held.inheritFds] };
    return { external: [...(this.base.external ?? []), ...refs.map((r) => r.key)] };
  }

  /** TLS, HELLO → WELCOME. Throws with the server untouched. */
  async connect(criuVersion: string): Promise<void> {
    const { to } = this.remote;
    try {
      const socket = await connectTls({
        ...to,
        timeoutMs: CONNECT_TIMEOUT_MS,
        ...(this.signal ? { signal: this.signal } : {}),
      });
      this.agentName = peerName(socket);
      this.channel = new FramedConnection(socket, AGENT_FRAME_FORMAT);
      const hello = {
        version: AGENT_PROTOCOL_VERSION,
        route: 'process',
        migrationId: this.migrationId,
        criuVersion,
        kernel: os.release(),
        tuples: wireTuplesFromProc(this.tuples),
        ...(this.remote.moveAddress !== undefined ? { moveAddress: this.remote.moveAddress } : {}),
        lazyPages: this.remote.lazyPages === true,
        ...(this.externalRefs().length > 0 ? { external: this.externalRefs() } : {}),
      };
      await this.channel.send(MSG.HELLO, 0, encodeBody(hello), this.signal);
      const reply = await this.receive(REPLY_TIMEOUT_MS);
      if (reply.type === MSG.REFUSE) {
        const refuse = decodeRefuse(reply.payload);
        throw this.fail(
          refuse.code,
          'check',
          `the agent at ${to.host}:${to.port} refused: ${refuse.reason}; the server keeps running on the source`,
        );
      }
      if (reply.type !== MSG.WELCOME) throw new Error(`expected WELCOME, got ${messageName(reply.type)}`);
      this.welcome = decodeWelcome(reply.payload);
      this.emit('check', { state: 'welcome', agent: this.agentName, criuVersion: this.welcome.criuVersion });
    } catch (error) {
      this.channel?.close();
      if (error instanceof ProcessMigrationError) throw error;
      const code = (error as { code?: string }).code ?? 'ERR_AGENT_PROTOCOL';
      // TLS 1.3: an agent that refuses our certificate may just close after the handshake.
      const why =
        code === 'ERR_TRANSPORT_DISCONNECTED' && this.welcome === undefined
          ? ' (the agent closed the connection before answering: it may not accept our certificate; see its log)'
          : '';
      throw this.fail(
        code,
        'check',
        `cannot start a migration with the agent at ${to.host}:${to.port}: ${(error as Error).message}${why}; the server keeps running on the source`,
        error,
      );
    }
  }

  async run(): Promise<RemoteProcessMigrationResult> {
    const started = performance.now();
    const { pid } = this.remote;
    if (this.signal?.aborted)
      throw this.fail(
        'ERR_MIGRATION_ABORTED',
        'check',
        'migration aborted before it started; the server keeps running on the source',
        this.signal.reason,
      );
    const version = await this.source.criu.version({
      timeoutMs: 30_000,
      ...(this.signal ? { signal: this.signal } : {}),
    });
    this.sockets = processTcpSockets(pid);
    this.tuples = new Set(this.sockets.tuples.values());
    await this.connect(version.text);
    const channel = this.channel as FramedConnection;
    let dumpDir: string;
    let cleanup: () => Promise<void>;
    try {
      ({ dumpDir, cleanup } = await prepareImagesDir(this.remote.imagesDir, this.migrationId));
    } catch (error) {
      channel.close();
      const e = error as NodeJS.ErrnoException;
      throw this.fail(
        e.code ?? 'ERR_MIGRATION_IMAGES_DIR',
        'check',
        `cannot prepare the images directory: ${e.message}`,
        error,
      );
    }
    if (this.signal?.aborted) {
      channel.close();
      await cleanup();
      throw this.fail(
        'ERR_MIGRATION_ABORTED',
        'dump',
        'migration aborted before the dump; the server keeps running on the source',
        this.signal.reason,
      );
    }
    try {
      await this.prepareLock();
    } catch (error) {
      channel.close();
      await cleanup();
      throw this.fail(
        'ERR_MIGRATION_LOCK',
        'check',
        `cannot prepare the connections' lock: ${describeFailure(error)}`,
        error,
      );
    }
    if (this.remote.lazyPages === true) return migrateLazily(this, { dumpDir, cleanup, started });
    try {
      const external = this.externalFiles();
      await this.timed('dump', () =>
        this.dumper.criu.dump({ ...this.base, ...external, pid, imagesDir: dumpDir }, this.lockHandlers()),
      );
    } catch (error) {
      channel.close();
      await this.releaseSourceLock();
      await keepOnlyLogs(dumpDir);
      throw dumpFailed(pid, error);
    }
    let phase: ProcessMigrationPhase = 'transfer';
    let sent: { files: number; bytes: number };
    try {
      sent = await this.timed('transfer', () =>
        sendImages(channel, dumpDir, this.signal, () => this.receive(REPLY_TIMEOUT_MS)),
      );
      phase = 'moveAddress';
      if (this.signal?.aborted) throw this.signal.reason;
      const move = this.remote.moveAddress;
      if (move !== undefined) {
        this.moved = true;
        await this.timed('moveAddress', () => removeAddress(this.where(move)));
      }
      if (this.signal?.aborted) throw this.signal.reason;
      // A RESTORE that cannot be written was never sent: still this side's to roll back.
      await channel.send(MSG.RESTORE, 0, encodeBody({}));
    } catch (error) {
      channel.close();
      return this.rollBack(phase, error, dumpDir, cleanup);
    }
    // RESTORE is out: from here on only the agent's answer decides.
    let reply: Frame;
    try {
      reply = await this.timed('restore', () => this.receive(RESTORE_REPLY_TIMEOUT_MS));
      if (reply.type === MSG.RESTORE_FAILED) {
        const failure = decodeFailureBody(reply.payload, 'RESTORE_FAILED');
        channel.close();
        const cause = this.fail(failure.code, 'restore', `the agent could not restore: ${failure.message}`);
        return this.rollBack('restore', cause, dumpDir, cleanup);
      }
      if (reply.type !== MSG.RESTORED) throw new Error(`expected RESTORED, got ${messageName(reply.type)}`);
    } catch (error) {
      channel.close();
      if (error instanceof ProcessMigrationError) throw error;
      throw uncertain(this.remote, error, dumpDir, this.lock as ConnectionLock);
    }
    const restored = decodeRestored(reply.payload);
    channel.close();
    await this.releaseSourceLock();
    const stats = readDumpStats(dumpDir);
    const pages = pagesBytes(dumpDir);
    await cleanup();
    this.phases.total = performance.now() - started;
    const welcome = this.welcome as Welcome;
    this.emit('done', { restoredPid: restored.pid });
    return {
      restoredPid: restored.pid,
      phases: this.phases,
      downtimeMs: this.phases.dump + this.phases.transfer + this.phases.moveAddress + this.phases.restore,
      transfer: 'agent',
      files: sent.files,
      bytes: sent.bytes,
      pagesBytes: pages,
      agent: {
        host: this.remote.to.host,
        port: this.remote.to.port,
        ...(this.agentName !== undefined ? { name: this.agentName } : {}),
        criuVersion: welcome.criuVersion,
        kernel: welcome.kernel,
      },
      ...(stats !== undefined ? { dumpStats: stats } : {}),
    };
  }

  /** Restores here from the local images; deletes them when that worked; always throws. */
  private async rollBack(
    phase: ProcessMigrationPhase,
    cause: unknown,
    dumpDir: string,
    cleanup: () => Promise<void>,
  ): Promise<never> {
    try {
      return await rollback(this, phase, cause, dumpDir, dumpDir);
    } catch (error) {
      if ((error as { code?: string }).code === 'ERR_MIGRATION_ROLLED_BACK') await cleanup().catch(() => undefined);
      throw error;
    }
  }
}

/** The two-host form of migrateProcess (see the file comment). */
export async function migrateProcessRemote(
  options: RemoteProcessMigrationOptions,
): Promise<RemoteProcessMigrationResult> {
  validateRemoteOptions(options);
  checkPid(options.pid);
  if (options.source?.netns !== undefined) checkNetns(options.source.netns, 'source.netns');
  checkTaskNetns(options.pid, options.source?.netns, 'source.netns');
  const command = locateCriu(options.criuPath !== undefined ? { criuPath: options.criuPath } : {});
  // A tree with its own mount namespace is dumped from inside it; a rollback restores in ours.
  const dumper = criuForTask(command.path, { pid: options.pid, ...options.source });
  let source: NetnsCriu | undefined;
  let migration: RemoteMigration | undefined;
  try {
    source = dumper.mounts.mntns === undefined ? dumper : criuInNetns(command.path, options.source?.netns);
    migration = new RemoteMigration(options, dumper, source as NetnsCriu);
    return await migration.run();
  } finally {
    migration?.held?.close();
    if (source !== dumper) await source?.close();
    await dumper.close();
  }
}
