/** restoreConnection(s): a ConnectionImage back into a new, connected, live net.Socket. */
import type * as net from 'node:net';

import type { RestoreOptions } from './connection-options';
import type { ConnectionImage } from './image';
import { stageRestoreConnections } from './staged-restore';

/** restoreConnection for many images: one nftables batch per lock table. */
export async function restoreConnections(
  images: readonly ConnectionImage[],
  options: RestoreOptions = {},
): Promise<net.Socket[]> {
  return (await stageRestoreConnections(images, options)).commit();
}

/** Restores a connection image into a new, connected net.Socket. */
export async function restoreConnection(image: ConnectionImage, options: RestoreOptions = {}): Promise<net.Socket> {
  const [socket] = await restoreConnections([image], options);
  return socket;
}
