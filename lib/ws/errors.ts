/** Errors of the WebSocket handover (lib/ws). */
import { NodeCriuError } from '../errors';

/**
 * A WebSocket could not be handed over (or taken over). code:
 *   ERR_WS_NOT_INSTALLED          the optional peer dependency `ws` is not installed
 *   ERR_WS_TLS                    a wss:// (TLS) connection: its TLS state lives inside OpenSSL and
 *                                 cannot leave the process; move the whole process (migrateProcess)
 *   ERR_WS_DEFLATE_CONTEXT_TAKEOVER permessage-deflate with context takeover on either side: the
 *                                 zlib window is process memory; negotiate server_no_context_takeover
 *                                 and client_no_context_takeover (or no compression) to move
 *   ERR_WS_EXTENSION              an extension other than permessage-deflate
 *   ERR_WS_CLIENT_SIDE            a WebSocket this process opened as a client (only a server's clients move)
 *   ERR_WS_FRAGMENTED_COMPRESSED  a compressed message arrived in part (its inflate state cannot move)
 *   ERR_WS_BUSY                   the WebSocket did not come to rest between frames in time
 *   ERR_WS_INTERNALS              this `ws` version's internals are not the ones this module knows
 *   ERR_WS_STATE                  (target) a connection's carried WebSocket state is malformed
 * `index` is the position of the WebSocket concerned in the list handed over, when one is.
 */
export class WebSocketHandoverError extends NodeCriuError {
  readonly index?: number;
  constructor(message: string, code: string, index?: number, cause?: unknown) {
    super(message, cause === undefined ? { code } : { code, cause });
    if (index !== undefined) this.index = index;
  }
}
