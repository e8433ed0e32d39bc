/**
 * The source's side of the image transfer to an agent: every regular file of the dump, one at a
 * time, as FILE, FILE_DATA chunks of at most the frame maximum (each send waits for the stream's
 * drain: backpressure), FILE_END with its SHA-256; then IMAGES_END and the agent's IMAGES_OK.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
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
import type { Frame, FramedConnection } from '../transport/framed';

export async function sendImages(
  channel: FramedConnection,
  dir: string,
  signal: AbortSignal | undefined,
  reply: () => Promise<Frame>,
): Promise<{ files: number; bytes: number }> {
  const names = (await fs.promises.readdir(dir, { withFileTypes: true }))
    .filter((entry) => entry.isFile())
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
