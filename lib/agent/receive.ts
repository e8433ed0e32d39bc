/**
 * The agent's side of the image transfer: FILE / FILE_DATA* / FILE_END per file, then IMAGES_END.
 * Files go one at a time into a fresh 0700 per-migration directory, opened O_EXCL|O_NOFOLLOW with
 * mode 0600, streamed to disk as the chunks arrive, and checked against the announced size and
 * SHA-256. Names, count, per-file and total sizes are bounded by the agent's limits; the first
 * violation ends the session (the caller deletes the directory).
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
    await receiveFile(path.join(dir, file.name), file.index, file.size, next);
  }
}

async function receiveFile(
  file: string,
  index: number,
  size: number,
  next: () => Promise<{ type: number; id: number; payload: Buffer }>,
): Promise<void> {
  const { O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW } = fs.constants;
  const handle = await fs.promises.open(file, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600);
  const hash = createHash('sha256');
  let written = 0;
  try {
    for (;;) {
      const frame = await next();
      if (frame.type === MSG.FILE_END) {
        const { sha256 } = decodeFileEnd(frame.payload);
        if (written !== size) throw new AgentProtocolError(`${path.basename(file)}: ${written} of ${size} bytes`);
        if (hash.digest('hex') !== sha256) throw new AgentProtocolError(`${path.basename(file)}: checksum mismatch`);
        return;
      }
      if (frame.type !== MSG.FILE_DATA || frame.id !== index)
        throw new AgentProtocolError(`expected FILE_DATA ${index} or FILE_END, got ${messageName(frame.type)}`);
      if (written + frame.payload.length > size)
        throw new AgentProtocolError(`${path.basename(file)}: more than the announced ${size} bytes`);
      hash.update(frame.payload);
      let offset = 0;
      while (offset < frame.payload.length) {
        const { bytesWritten } = await handle.write(
          frame.payload,
          offset,
          frame.payload.length - offset,
          written + offset,
        );
        offset += bytesWritten;
      }
      written += frame.payload.length;
    }
  } finally {
    await handle.close();
  }
}
