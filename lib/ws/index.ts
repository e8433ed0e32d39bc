/**
 * node-criu/ws: WebSocket (`ws`) servers' clients handed over between processes, on the
 * connections route. Needs the optional peer dependency `ws` (8.x), loaded on first use.
 */
export { handOverWebSockets } from './source';
export type { HandOverWebSocketsOptions, HandOverWebSocketsResult } from './source';
export { acceptWebSocketHandover, webSocketAdopter } from './target';
export type {
  AcceptWebSocketHandoverOptions,
  AcceptWebSocketHandoverResult,
  HandoverConnectionInfo,
  HandedOverRequest,
} from './target';
export { WebSocketHandoverError } from './errors';
