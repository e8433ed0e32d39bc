/**
 * The connection-level API in one place: checkpoint (checkpoint.ts), hold (hold.ts), staged
 * restore (staged-restore.ts), restore (restore.ts), their options and locks (connection-options.ts).
 */
export { checkpointConnection, checkpointConnections } from './checkpoint';
export { holdConnections } from './hold';
export type { HeldConnection, HeldConnections, HeldState, HoldOptions } from './hold';
export { stageRestoreConnections } from './staged-restore';
export type { StagedRestore } from './staged-restore';
export { restoreConnection, restoreConnections } from './restore';
export type { CheckpointOptions, ConnectionLock, RestoreOptions } from './connection-options';
