/**
 * The agent's side of the image transfer: FILE / FILE_DATA* / FILE_END per file, then IMAGES_END.
 * Files go into a fresh 0700 per-migration directory, opened O_EXCL|O_NOFOLLOW with mode 0600,
 * and are checked against the announced size and SHA-256. A dump is mostly small files (one per
 * connection): those are kept in memory until checked and then written by a few writers in the
 * background while the next files arrive (IMAGES_END waits for them); large ones (pages) are
 * streamed to disk as their chunks arrive. Names, count, per-file and total sizes are bounded by
 * the agent's limits; the first violation ends the session, once no write is under way (the
 * caller deletes the directory).
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

import {
  AgentProtocolError,
  decodeFileEnd,
  decodeFileStart,
  decodeImagesEnd,
  messageName,
  MSG,
  type ImagesEnd,
} from './protocol';

export interface AgentLimits {
  /** Sum of all files' sizes. */
  maxImageBytes: number;
  maxFiles: number;
  maxFileBytes: number;
}

/** Files up to this size are written in the background (at most WRITERS at a time). */
const SMALL_FILE_BYTES = 1024 * 1024;
const WRITERS = 16;

/** Background writes of checked small files: at most WRITERS at a time; the first failure is kept. */
class Writers {
  private readonly running = new Set<Promise<void>>();
  private failure: unknown;

  async add(file: string, data: Buffer): Promise<void> {
    this.check();
    while (this.running.size >= WRITERS) await Promise.race(this.running);
    this.check();
    const task = writeNew(file, data).then(
      () => undefined,
      (error: unknown) => void (this.failure ??= error),
    );
    this.running.add(task);
    void task.then(() => this.running.delete(task));
  }

  /** Every write ended; throws the first failure. */
  async drain(): Promise<void> {
    await Promise.all(this.running);
    this.check();
  }

  /** Every write ended, whatever happened (before the caller deletes the directory). */
  async settle(): Promise<void> {
    await Promise.all(this.running);
  }

  private check(): void {
    if (this.failure !== undefined) throw this.failure;
  }
}

const { O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW } = fs.constants;

async function writeNew(file: string, data: Buffer): Promise<void> {
  const handle = await fs.promises.open(file, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600);
  try {
    await handle.writeFile(data);
  } finally {
    await handle.close();
  }
}

export const DEFAULT_LIMITS: AgentLimits = {
  maxImageBytes: 16 * 1024 ** 3,
  maxFiles: 100_000,
  maxFileBytes: 8 * 1024 ** 3,
};

/** A limit of the agent was hit (the peer is authenticated but asks too much). */
export class AgentLimitError extends AgentProtocolError {
  constructor(message: string) {
    super(message);
    (this as { code: string }).code = 'ERR_AGENT_LIMIT';
  }
}

/**
 * Receives the images into `dir` (which must exist, empty, 0700). Resolves with the totals once
 * IMAGES_END matched what arrived. `next` reads the next frame (with the session's idle timeout).
 */
export async function receiveImages(
  dir: string,
  limits: AgentLimits,
  next: () => Promise<{ type: number; id: number; payload: Buffer }>,
): Promise<ImagesEnd> {
  const writers = new Writers();
  try {
    const end = await receiveAll(dir, limits, next, writers);
    await writers.drain();
    return end;
  } finally {
    await writers.settle();
  }
}

async function receiveAll(
  dir: string,
  limits: AgentLimits,
  next: () => Promise<{ type: number; id: number; payload: Buffer }>,
  writers: Writers,
): Promise<ImagesEnd> {
  const names = new Set<string>();
  let bytes = 0;
  for (;;) {
    const frame = await next();
    if (frame.type === MSG.IMAGES_END) {
      const end = decodeImagesEnd(frame.payload);
      if (end.files !== names.size || end.bytes !== bytes)
        throw new AgentProtocolError(
          `IMAGES_END says ${end.files} files / ${end.bytes} bytes, ${names.size} / ${bytes} arrived`,
        );
      return end;
    }
    if (frame.type !== MSG.FILE)
      throw new AgentProtocolError(`expected FILE or IMAGES_END, got ${messageName(frame.type)}`);
    if (names.size >= limits.maxFiles) throw new AgentLimitError(`more than ${limits.maxFiles} files`);
    const file = decodeFileStart(frame.payload, limits.maxFiles, limits.maxFileBytes);
    if (file.index !== names.size) throw new AgentProtocolError(`FILE.index ${file.index}, expected ${names.size}`);
    if (names.has(file.name)) throw new AgentProtocolError(`FILE ${file.name} sent twice`);
    if (bytes + file.size > limits.maxImageBytes)
      throw new AgentLimitError(`images larger than ${limits.maxImageBytes} bytes`);
    names.add(file.name);
    bytes += file.size;
    if (file.size <= SMALL_FILE_BYTES)
      await writers.add(path.join(dir, file.name), await receiveSmallFile(file.name, file.index, file.size, next));
    else await receiveFile(path.join(dir, file.name), file.index, file.size, next);
  }
}

type Next = () => Promise<{ type: number; id: number; payload: Buffer }>;

/** The next FILE_DATA of file `index` (undefined at its FILE_END, whose SHA-256 `end` checks). */
async function nextChunk(
  name: string,
  index: number,
  size: number,
  written: number,
  next: Next,
  end: (sha256: string) => void,
): Promise<Buffer | undefined> {
  const frame = await next();
  if (frame.type === MSG.FILE_END) {
    const { sha256 } = decodeFileEnd(frame.payload);
    if (written !== size) throw new AgentProtocolError(`${name}: ${written} of ${size} bytes`);
    end(sha256);
    return undefined;
  }
  if (frame.type !== MSG.FILE_DATA || frame.id !== index)
    throw new AgentProtocolError(`expected FILE_DATA ${index} or FILE_END, got ${messageName(frame.type)}`);
  if (written + frame.payload.length > size)
    throw new AgentProtocolError(`${name}: more than the announced ${size} bytes`);
  return frame.payload;
}

/** A small file's bytes, checked against its size and SHA-256 (written later by Writers). */
async function receiveSmallFile(name: string, index: number, size: number, next: Next): Promise<Buffer> {
  const hash = createHash('sha256');
  const data = Buffer.allocUnsafe(size);
  let written = 0;
  const check = (sha256: string): void => {
    if (hash.digest('hex') !== sha256) throw new AgentProtocolError(`${name}: checksum mismatch`);
  };
  for (;;) {
    const chunk = await nextChunk(name, index, size, written, next, check);
    if (chunk === undefined) return data;
    hash.update(chunk);
    chunk.copy(data, written);
    written += chunk.length;
  }
}

/** A large file, streamed to disk as its chunks arrive, checked against its size and SHA-256. */
async function receiveFile(file: string, index: number, size: number, next: Next): Promise<void> {
  const name = path.basename(file);
  const handle = await fs.promises.open(file, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600);
  const hash = createHash('sha256');
  const check = (sha256: string): void => {
    if (hash.digest('hex') !== sha256) throw new AgentProtocolError(`${name}: checksum mismatch`);
  };
  let written = 0;
  try {
    for (;;) {
      const chunk = await nextChunk(name, index, size, written, next, check);
      if (chunk === undefined) return;
      hash.update(chunk);
      let offset = 0;
      while (offset < chunk.length) {
        const { bytesWritten } = await handle.write(chunk, offset, chunk.length - offset, written + offset);
        offset += bytesWritten;
      }
      written += chunk.length;
    }
  } finally {
    await handle.close();
  }
}
