/**
 * The source's side of the image transfer to an agent: every regular file of the dump, in order,
 * as FILE, FILE_DATA chunks of at most the frame maximum (each send waits for the stream's drain:
 * backpressure), FILE_END with its SHA-256; then IMAGES_END and the agent's IMAGES_OK. A dump is
 * mostly small files (one per connection): those are read a few at a time ahead of the one being
 * sent, so the channel does not wait for the disk file by file.
 * Also the two failure helpers of process-remote.ts (a failed dump's leftovers, the uncertain end).
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import {
  AGENT_MAX_PAYLOAD,
  AgentProtocolError,
  decodeEmpty,
  decodeFailureBody,
  encodeBody,
  FILE_NAME,
  messageName,
  MSG,
} from '../agent/protocol';
import { ensurePrivateDirectory } from '../security';
import type { Frame, FramedConnection } from '../transport/framed';
import { describeFailure, ProcessMigrationError } from './process-errors';
import type { ConnectionLock } from './process-lock';
import type { RemoteProcessMigrationOptions } from './process-remote-options';

/** Files up to this size are read whole, ahead of sending (READ_AHEAD of them at most). */
const SMALL_FILE_BYTES = 1024 * 1024;
const READ_AHEAD = 16;

/** A small file's bytes, or the open handle and size of a large one (streamed when its turn comes). */
type Prefetched = { data: Buffer } | { handle: fs.promises.FileHandle; size: number };

async function prefetch(file: string): Promise<Prefetched> {
  const handle = await fs.promises.open(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  try {
    const { size } = await handle.stat();
    if (size > SMALL_FILE_BYTES) return { handle, size };
    const data = await handle.readFile();
    await handle.close();
    return { data };
  } catch (error) {
    await handle.close().catch(() => undefined);
    throw error;
  }
}

export async function sendImages(
  channel: FramedConnection,
  dir: string,
  signal: AbortSignal | undefined,
  reply: () => Promise<Frame>,
  include: (name: string) => boolean = () => true,
): Promise<{ files: number; bytes: number }> {
  const names = (await fs.promises.readdir(dir, { withFileTypes: true }))
    .filter((entry) => entry.isFile() && include(entry.name))
    .map((entry) => entry.name)
    .sort();
  for (const name of names)
    if (!FILE_NAME.test(name)) throw new AgentProtocolError(`image file name ${JSON.stringify(name)} cannot be sent`);
  const ahead: Array<Promise<Prefetched>> = [];
  const fetchNext = (): void => {
    const i = ahead.length;
    if (i >= names.length) return;
    const fetched = prefetch(path.join(dir, names[i]));
    fetched.catch(() => undefined);
    ahead.push(fetched);
  };
  for (let i = 0; i < READ_AHEAD; i++) fetchNext();
  let bytes = 0;
  try {
    for (let index = 0; index < names.length; index++) {
      const file = await ahead[index];
      fetchNext();
      bytes += await sendFile(channel, index, names[index], file, signal);
    }
  } finally {
    // Large files opened ahead and never sent (a failure midway) are closed.
    for (const fetched of ahead)
      void fetched.then(
        (f) => ('handle' in f ? f.handle.close().catch(() => undefined) : undefined),
        () => undefined,
      );
  }
  await channel.send(MSG.IMAGES_END, 0, encodeBody({ files: names.length, bytes }), signal);
  const answer = await reply();
  if (answer.type === MSG.ERROR) {
    const failure = decodeFailureBody(answer.payload, 'ERROR');
    throw new AgentProtocolError(`the agent refused the images: ${failure.code}: ${failure.message}`);
  }
  if (answer.type !== MSG.IMAGES_OK)
    throw new AgentProtocolError(`expected IMAGES_OK, got ${messageName(answer.type)}`);
  decodeEmpty(answer.payload, 'IMAGES_OK');
  return { files: names.length, bytes };
}

/** One file as FILE, FILE_DATA*, FILE_END; resolves with its size. Closes a large file's handle. */
async function sendFile(
  channel: FramedConnection,
  index: number,
  name: string,
  file: Prefetched,
  signal: AbortSignal | undefined,
): Promise<number> {
  const size = 'data' in file ? file.data.length : file.size;
  await channel.send(MSG.FILE, 0, encodeBody({ index, name, size }), signal);
  const hash = createHash('sha256');
  if ('data' in file) {
    hash.update(file.data);
    for (let offset = 0; offset < size; offset += AGENT_MAX_PAYLOAD)
      await channel.send(MSG.FILE_DATA, index, file.data.subarray(offset, offset + AGENT_MAX_PAYLOAD), signal);
  } else {
    const buffer = Buffer.allocUnsafe(AGENT_MAX_PAYLOAD);
    try {
      for (let position = 0; position < size;) {
        const { bytesRead } = await file.handle.read(buffer, 0, Math.min(buffer.length, size - position), position);
        if (bytesRead === 0) throw new AgentProtocolError(`${name} shrank while it was sent`);
        const chunk = buffer.subarray(0, bytesRead);
        hash.update(chunk);
        // send() copies the chunk into its frame before it resolves, so the buffer can be reused.
        await channel.send(MSG.FILE_DATA, index, chunk, signal);
        position += bytesRead;
      }
    } finally {
      await file.handle.close();
    }
  }
  await channel.send(MSG.FILE_END, 0, encodeBody({ sha256: hash.digest('hex') }), signal);
  return size;
}

/**
 * The dump's directory: `<imagesDir>/dump-<id>` (imagesDir made 0700 if missing, refused if
 * unsafe), or one in a fresh private temporary directory. `cleanup` removes what was made here.
 */
export async function prepareImagesDir(
  imagesDir: string | undefined,
  migrationId: string,
): Promise<{ dumpDir: string; cleanup: () => Promise<void> }> {
  const made = imagesDir === undefined;
  const root = made
    ? await fs.promises.mkdtemp(path.join(os.tmpdir(), 'node-criu-migrate-'))
    : ensurePrivateDirectory(imagesDir, 'imagesDir');
  const dumpDir = path.join(root, `dump-${migrationId.slice(0, 12)}`);
  const cleanup = (): Promise<void> => fs.promises.rm(made ? root : dumpDir, { recursive: true, force: true });
  try {
    await fs.promises.mkdir(dumpDir, { mode: 0o700 });
  } catch (error) {
    await cleanup();
    throw error;
  }
  return { dumpDir, cleanup };
}

/** After a failed dump: CRIU's log stays for the error message's path, partial images go. */
export async function keepOnlyLogs(dir: string): Promise<void> {
  const names = await fs.promises.readdir(dir).catch(() => [] as string[]);
  for (const name of names)
    if (!name.endsWith('.log')) await fs.promises.rm(path.join(dir, name), { recursive: true, force: true });
}

/** The channel was lost after RESTORE was sent: nothing is rolled back; the message says what to do. */
export function uncertain(
  remote: RemoteProcessMigrationOptions,
  cause: unknown,
  dumpDir: string,
  lock: ConnectionLock,
): ProcessMigrationError {
  const { to, moveAddress, source } = remote;
  const unlock = lock.unlockCommand();
  const netns = source?.netns;
  const readd =
    moveAddress !== undefined
      ? `'ip addr add ${moveAddress.cidr} dev ${moveAddress.device}'${netns ? ` in ${netns}` : ''}, then `
      : '';
  return new ProcessMigrationError(
    `the channel to the agent at ${to.host}:${to.port} was lost after RESTORE was sent (${describeFailure(cause)}): the agent may have restored the server, so it was not restored here. Check on ${to.host} whether pid ${remote.pid} runs (the agent's log says RESTORED or RESTORE_FAILED). If it does not, restore it here by hand: ${readd}'node-criu restore --images-dir ${dumpDir}${netns ? ` --netns ${netns}` : ''}'${unlock !== undefined ? `, then '${unlock}'` : ''}. Until then the ${lock.describe()} drops the peers' packets (no resets)`,
    {
      code: 'ERR_MIGRATION_UNCERTAIN',
      phase: 'restore',
      serverOn: 'unknown',
      pid: remote.pid,
      imagesDir: dumpDir,
      cause,
    },
  );
}
