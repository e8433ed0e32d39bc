/**
 * migrateProcess({ to: agent, lazyPages: true }): post-copy through the agent. After WELCOME the
 * channel is read by a PageChannel (lib/agent/page-stream.ts) that carries CRIU's page stream as
 * PAGE_DATA frames beside the protocol's messages. startLazyDump resolves at post-dump with every
 * image but the anonymous memory; those go as in the plain route; IMAGES_OK; the address is
 * removed; then targetStarted() and RESTORE (the attach point: pages may flow from here on). The
 * agent restores (startLazyRestore) and answers RESTORED while the tree faults its pages in over
 * the channel; CRIU here serves them from the frozen tree and answers the DUMP (`finished`) once
 * the agent's daemon has them all, then kills the tree. Only then are CRIU's lock table and the
 * local images deleted, and the channel closed after the agent ended the session.
 *
 * One owner at every moment:
 * - before targetStarted (the transfer, the address removal, an abort): the address comes back and
 *   the dump is aborted; CRIU resumes the tree and the repair lifts its lock (lazy-pages.ts):
 *   ERR_MIGRATION_ROLLED_BACK, serverOn 'source'.
 * - from targetStarted on, the source copy never runs again: a failure (RESTORE_FAILED, the channel
 *   lost, the page stream broken) kills it, and the agent kills its copy if its pages cannot all
 *   arrive: ERR_MIGRATION_LOST, serverOn 'none' (post-copy has no rollback; the images here lack
 *   the memory, so nothing can be restored by hand). If every page had been served before the
 *   channel failed, the agent's copy runs: ERR_MIGRATION_UNCERTAIN when RESTORED was not seen.
 * The caller's signal counts until RESTORE is sent (before it: a rollback); the page transfer is
 * bounded by its own timeout.
 */
import { removeAddress } from '../sys/address';
import type { Frame, FramedConnection } from '../transport/framed';
import { PageChannel } from '../agent/page-stream';
import { AgentProtocolError, decodeFailureBody, decodeRestored, encodeBody, messageName, MSG } from '../agent/protocol';
import { checkPipeSize, startLazyDump, type LazyDump, type LazyTransferResult } from './lazy-pages';
import { describeFailure, ProcessMigrationError, type ProcessMigrationPhase } from './process-errors';
import { readDumpStats } from './process-images';
import { dumpFailed } from './process-options';
import type { RemoteMigration } from './process-remote';
import type { RemoteProcessMigrationResult } from './process-remote-options';
import { keepOnlyLogs, sendImages } from './process-remote-send';

const REPLY_TIMEOUT_MS = 60_000;
/** RESTORE's answer: the agent waits up to 30 s for ids, 10 s for sockets, then CRIU's restore. */
const RESTORE_REPLY_TIMEOUT_MS = 180_000;
/** The whole lazy dump: until every page was served. */
const LAZY_TIMEOUT_MS = 600_000;
/** After the last page: the agent ends the session once its daemon exited. */
const SESSION_END_TIMEOUT_MS = 30_000;

export interface LazyContext {
  dumpDir: string;
  cleanup: () => Promise<void>;
  started: number;
}

/** Image files of a lazy dump worth sending: not CRIU's logs (still written to) or its config. */
const isImage = (name: string): boolean => !name.endsWith('.log') && name !== 'lazy-dump.conf';

export async function migrateLazily(m: RemoteMigration, ctx: LazyContext): Promise<RemoteProcessMigrationResult> {
  const { pid } = m.remote;
  const { dumpDir, cleanup } = ctx;
  const channel = m.channel as FramedConnection;
  const link = new PageChannel(channel, { endAfterOwnEnd: true });
  const reply = (timeoutMs: number, signal?: AbortSignal): Promise<Frame> =>
    link.next(AbortSignal.any([AbortSignal.timeout(timeoutMs), ...(signal ? [signal] : [])]));
  try {
    checkPipeSize();
  } catch (error) {
    link.close();
    await cleanup();
    throw m.fail(
      (error as { code: string }).code,
      'check',
      `${(error as Error).message}; the server keeps running on the source`,
      error,
    );
  }
  // The caller's signal reaches the lazy dump (its DUMP call, then the page relay) only until the
  // commit: aborting the page stream after it would lose the process.
  const preCommit = new AbortController();
  const onAbort = (): void => preCommit.abort(m.signal?.reason);
  if (m.signal?.aborted) onAbort();
  else m.signal?.addEventListener('abort', onAbort, { once: true });
  let dump: LazyDump;
  try {
    const external = m.externalFiles();
    dump = await m.timed('dump', () =>
      startLazyDump({
        criu: m.dumper.criu,
        pid,
        imagesDir: dumpDir,
        stream: link.pages,
        criuOptions: { ...m.base, ...external },
        handlers: m.lockHandlers(),
        signal: preCommit.signal,
        timeoutMs: LAZY_TIMEOUT_MS,
      }),
    );
  } catch (error) {
    m.signal?.removeEventListener('abort', onAbort);
    link.close();
    await m.releaseSourceLock();
    await keepOnlyLogs(dumpDir);
    throw dumpFailed(pid, error, ' (lazy pages)');
  }
  let phase: ProcessMigrationPhase = 'transfer';
  let sent: { files: number; bytes: number };
  try {
    sent = await m.timed('transfer', () =>
      sendImages(channel, dumpDir, m.signal, () => reply(REPLY_TIMEOUT_MS, m.signal), isImage),
    );
    phase = 'moveAddress';
    if (m.signal?.aborted) throw m.signal.reason;
    const move = m.remote.moveAddress;
    if (move !== undefined) {
      m.moved = true;
      await m.timed('moveAddress', () => removeAddress(m.where(move)));
    }
    if (m.signal?.aborted) throw m.signal.reason;
    // A RESTORE that cannot be written was never sent: still this side's to roll back.
    if (link.failed !== undefined) throw link.failed;
  } catch (error) {
    m.signal?.removeEventListener('abort', onAbort);
    return rollBackLazy(m, link, dump, phase, error, ctx);
  }
  // The commit: from here on the source copy must never run again.
  m.signal?.removeEventListener('abort', onAbort);
  dump.targetStarted();
  const restoreSent = channel.send(MSG.RESTORE, 0, encodeBody({}));
  link.attach();
  let restoredPid: number;
  try {
    const answer = await m.timed('restore', async () => {
      await restoreSent;
      return reply(RESTORE_REPLY_TIMEOUT_MS);
    });
    if (answer.type === MSG.RESTORE_FAILED) {
      const failure = decodeFailureBody(answer.payload, 'RESTORE_FAILED');
      throw new AgentProtocolError(`the agent could not restore: ${failure.code}: ${failure.message}`);
    }
    if (answer.type !== MSG.RESTORED)
      throw new AgentProtocolError(`expected RESTORED, got ${messageName(answer.type)}`);
    restoredPid = decodeRestored(answer.payload).pid;
  } catch (error) {
    return lost(m, link, dump, error, ctx, false);
  }
  m.emit('pages', { state: 'start', restoredPid });
  let pages: LazyTransferResult;
  try {
    pages = await dump.finished;
  } catch (error) {
    return lost(m, link, dump, error, ctx, true);
  }
  m.emit('pages', { state: 'end', bytes: pages.fromCriu, ms: Math.round(pages.ms) });
  // The agent ends the session once its daemon exited; closing first could cut its last exchange.
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([link.stopped, new Promise((resolve) => (timer = setTimeout(resolve, SESSION_END_TIMEOUT_MS)))]);
  clearTimeout(timer);
  link.close();
  await m.releaseSourceLock();
  const stats = readDumpStats(dumpDir);
  await cleanup();
  m.phases.total = performance.now() - ctx.started;
  const welcome = m.welcome as NonNullable<RemoteMigration['welcome']>;
  m.emit('done', { restoredPid });
  return {
    restoredPid,
    phases: m.phases,
    downtimeMs: m.phases.dump + m.phases.transfer + m.phases.moveAddress + m.phases.restore,
    transfer: 'agent',
    files: sent.files,
    bytes: sent.bytes,
    pagesBytes: pages.fromCriu,
    agent: {
      host: m.remote.to.host,
      port: m.remote.to.port,
      ...(m.agentName !== undefined ? { name: m.agentName } : {}),
      criuVersion: welcome.criuVersion,
      kernel: welcome.kernel,
    },
    ...(stats !== undefined ? { dumpStats: stats } : {}),
    lazyPages: { bytes: pages.fromCriu, ms: pages.ms },
  };
}

/** Before the commit: the address back, the dump aborted (CRIU resumes the tree, the repair lifts its lock). */
async function rollBackLazy(
  m: RemoteMigration,
  link: PageChannel,
  dump: LazyDump,
  phase: ProcessMigrationPhase,
  cause: unknown,
  ctx: LazyContext,
): Promise<never> {
  const { pid } = m.remote;
  link.close();
  m.emit('rollback', { state: 'start', reason: describeFailure(cause) });
  let addressError: unknown;
  if (m.moved) await m.addressBack().catch((error: unknown) => (addressError = error));
  await dump.abort(cause instanceof Error ? cause : new Error(String(cause)));
  const outcome = await dump.finished.then(
    () => undefined,
    (error: unknown) => error as { serverOn?: string },
  );
  const onSource = outcome?.serverOn === 'source';
  // The tree runs here again, its sockets out of repair: their packets may pass.
  if (onSource) await m.releaseSourceLock();
  if (onSource) await ctx.cleanup().catch(() => undefined);
  else await keepOnlyLogs(ctx.dumpDir);
  const address =
    addressError !== undefined ? ` (but the address could not be put back: ${describeFailure(addressError)})` : '';
  throw new ProcessMigrationError(
    onSource
      ? `the migration failed (${describeFailure(cause)}); the server runs on the source again${address}`
      : `the migration failed (${describeFailure(cause)}) and the lazy dump could not be undone: ${describeFailure(outcome)}`,
    {
      code: onSource ? 'ERR_MIGRATION_ROLLED_BACK' : 'ERR_MIGRATION_LOST',
      phase,
      serverOn: onSource ? 'source' : 'none',
      pid,
      cause,
      ...(onSource ? {} : { rollbackError: outcome }),
    },
  );
}

/** After the commit: the source copy is killed by the failing dump; the agent kills its own. */
async function lost(
  m: RemoteMigration,
  link: PageChannel,
  dump: LazyDump,
  cause: unknown,
  ctx: LazyContext,
  restored: boolean,
): Promise<never> {
  const { pid, to } = m.remote;
  link.close();
  // Everything served before the failure: the agent's copy has its memory.
  const served = await dump.finished.then(
    () => true,
    () => false,
  );
  await m.releaseSourceLock();
  await keepOnlyLogs(ctx.dumpDir);
  if (served && !restored)
    throw new ProcessMigrationError(
      `every page was served to the agent at ${to.host}:${to.port}, but its answer to RESTORE was lost (${describeFailure(cause)}): check there whether the server runs (the agent's log says RESTORED); it does not run here`,
      { code: 'ERR_MIGRATION_UNCERTAIN', phase: 'restore', serverOn: 'unknown', pid, cause },
    );
  throw new ProcessMigrationError(
    `the lazy migration failed after the agent at ${to.host}:${to.port} was asked to restore (${describeFailure(cause)}): the source copy was killed and the agent's copy cannot run without its pages; the process is lost (post-copy has no rollback; CRIU's logs are in ${ctx.dumpDir})`,
    { code: 'ERR_MIGRATION_LOST', phase: 'restore', serverOn: 'none', pid, cause },
  );
}
