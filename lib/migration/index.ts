/** Live migration routes. Whole process through CRIU: migrateProcess. */
export { migrateProcess } from './process';
export type {
  ProcessMigrationOptions,
  ProcessMigrationProgress,
  ProcessMigrationResult,
  RemoteProcessMigrationOptions,
  RemoteProcessMigrationResult,
} from './process';
export { ProcessMigrationError } from './process-errors';
export type { ProcessMigrationPhase } from './process-errors';
export type { CriuDumpStats } from './process-images';

/** Connections only (the demo engineer's route): hand live sockets to another process. */
export * from './connections';
export { checkPipeSize, LazyPagesError, startLazyDump, startLazyRestore } from './lazy-pages';
export type { LazyDump, LazyDumpOptions, LazyRestore, LazyRestoreOptions, LazyTransferResult } from './lazy-pages';
export { openPageRelay } from './page-relay';
export type { PageRelay, PageRelayOptions, PageRelayStats } from './page-relay';

/** Servers (net.Server, http.Server) with all their connections, on the connections route. */
export { handOverServer } from './server-source';
export type { HandOverServerOptions, HandOverServerResult } from './server-source';
export { acceptServerHandover } from './server-target';
export type { AcceptServerHandoverOptions, AcceptServerHandoverResult, AgentSource } from './server-target';
export { trackServerConnections } from './server-http';
