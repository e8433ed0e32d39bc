/** The CRIU-RPC half: the `Criu` client, its option and notify types, errors, and criu lookup. */
export { Criu, PageServerChild } from './client';
export type {
  CriuClientOptions,
  CriuDumpResult,
  CriuFeatures,
  CriuNotifyRecord,
  CriuPageServerResult,
  CriuPreDumpOptions,
  CriuPreDumpResult,
  CriuRestoreResult,
  CriuVersion,
} from './client';
export type { CriuPreDumpIteration, CriuWaitStatus } from './sessions';
export type { CriuCallOptions } from './call';
export { CRIU_NOTIFY_SCRIPTS } from './notify';
export type {
  CriuNotifyEvent,
  CriuNotifyHandler,
  CriuNotifyHandlers,
  CriuNotifyResult,
  CriuNotifyScript,
} from './notify';
export { CRIU_OPTION_NAMES, toCriuOpts, validateCriuOptions } from './options';
export type {
  CriuCgroupsMode,
  CriuImageIoModeName,
  CriuNetworkLock,
  CriuOptions,
  CriuPreDumpModeName,
  ResolvedCriuFds,
} from './options';
export { decodeRequest, decodeResponse, encodeRequest, encodeResponse } from './codec';
export * from './messages';
export {
  CriuAbortError,
  CriuConnectionError,
  CriuNotifyHandlerError,
  CriuProtocolError,
  CriuRequestError,
  CriuTimeoutError,
} from './errors';
export type { CriuRecovery, CriuRequestErrorDetails } from './errors';
export { ensureCriu, locateCriu } from './locate';
export { startCriuService } from './service';
export type { CriuService, CriuServiceOptions } from './service';
export type { CriuCommand } from './locate';
