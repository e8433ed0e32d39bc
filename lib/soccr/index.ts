/**
 * The libsoccr half of node-criu.
 *
 * High level: checkpointConnection(socket) -> ConnectionImage -> encodeConnectionImage -> bytes
 * (disk, IPC, network) -> decodeConnectionImage -> restoreConnection(image) -> net.Socket.
 * Handovers: holdConnections (originals kept paused until resume/release) and
 * stageRestoreConnections (restored copies kept in repair mode until commit/abort). holdPackets:
 * the peers' packets held during a freeze and re-injected after the restore.
 * Low level: soccr.pause(socketOrFd) and the SoccrHandle calls, soccr.* socket helpers.
 */
import * as soccr from './soccr';

export { soccr };
export {
  checkpointConnection,
  checkpointConnections,
  holdConnections,
  restoreConnection,
  restoreConnections,
  stageRestoreConnections,
} from './connection';
export type {
  CheckpointOptions,
  ConnectionLock,
  HeldConnection,
  HeldConnections,
  HeldState,
  HoldOptions,
  RestoreOptions,
  StagedRestore,
} from './connection';
export {
  CONNECTION_IMAGE_VERSION,
  connectionImageProblem,
  decodeConnectionImage,
  encodeConnectionImage,
  validateConnectionImage,
} from './image';
export type { ConnectionImage, NftablesLockRef } from './image';
export { isNftablesLock, NftablesLock } from './nft-lock';
export type { ConnectionTuple, SweptLock } from './nft-lock';
export { holdPackets, PacketHold } from './packet-hold';
export type { HoldEndpoint, PacketHoldOptions, PacketHoldResult } from './packet-hold';
export { ConnectionImageError, NftablesLockError, SoccrError } from './errors';
export { SOCCR_FLAGS_WINDOW, TcpState, tcpStateName } from './sk-data';
export type { SkData, TcpStateName } from './sk-data';
export type { SocketAddress } from './address';
