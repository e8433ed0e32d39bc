/**
 * The source's side of the image transfer to an agent: every regular file of the dump, one at a
 * time, as FILE, FILE_DATA chunks of at most the frame maximum (each send waits for the stream's
 * drain: backpressure), FILE_END with its SHA-256; then IMAGES_END and the agent's IMAGES_OK.
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
import type { RemoteProcessMigrationOptions } from './process-remote-options';

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
  const buffer = Buffer.allocUnsafe(AGENT_MAX_PAYLOAD);
  let bytes = 0;
  for (let index = 0; index < names.length; index++) {
    const name = names[index];
    if (!FILE_NAME.test(name)) throw new AgentProtocolError(`image file name ${JSON.stringify(name)} cannot be sent`);
    const handle = await fs.promises.open(path.join(dir, name), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    try {
      const { size } = await handle.stat();
      await channel.send(MSG.FILE, 0, encodeBody({ index, name, size }), signal);
      const hash = createHash('sha256');
      for (let position = 0; position < size;) {
        const { bytesRead } = await handle.read(buffer, 0, Math.min(buffer.length, size - position), position);
        if (bytesRead === 0) throw new AgentProtocolError(`${name} shrank while it was sent`);
        const chunk = buffer.subarray(0, bytesRead);
        hash.update(chunk);
        // send() copies the chunk into its frame before it resolves, so the buffer can be reused.
        await channel.send(MSG.FILE_DATA, index, chunk, signal);
        position += bytesRead;
      }
      await channel.send(MSG.FILE_END, 0, encodeBody({ sha256: hash.digest('hex') }), signal);
      bytes += size;
    } finally {
      await handle.close();
    }
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
): ProcessMigrationError {
  const { to, moveAddress, source } = remote;
  const netns = source?.netns;
  const readd =
    moveAddress !== undefined
      ? `'ip addr add ${moveAddress.cidr} dev ${moveAddress.device}'${netns ? ` in ${netns}` : ''}, then `
      : '';
  return new ProcessMigrationError(
    `the channel to the agent at ${to.host}:${to.port} was lost after RESTORE was sent (${describeFailure(cause)}): the agent may have restored the server, so it was not restored here. Check on ${to.host} whether pid ${remote.pid} runs (the agent's log says RESTORED or RESTORE_FAILED). If it does not, restore it here by hand: ${readd}'node-criu restore --images-dir ${dumpDir}${netns ? ` --netns ${netns}` : ''}'. Until then CRIU's lock table here drops the peers' packets (no resets)`,
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
