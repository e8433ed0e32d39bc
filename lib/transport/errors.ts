/** Errors of the message transport, independent of whoever speaks over it (CRIU, the handover). */
import { NodeCriuError, type NodeCriuErrorOptions } from '../errors';

/**
 * A transport failure. `code`:
 *   ERR_TRANSPORT_CLOSED        this end was closed (close()), before or while waiting
 *   ERR_TRANSPORT_DISCONNECTED  the peer ended the conversation (EOF)
 *   ERR_TRANSPORT_UNTRUSTED_PEER  the listener we connected to runs as neither root nor our uid
 *   an errno name ('EMSGSIZE', 'ECONNREFUSED', 'ENOENT'...) with `syscall` when the kernel said no
 */
export class TransportError extends NodeCriuError {
  constructor(message: string, options: NodeCriuErrorOptions) {
    super(message, options);
  }
}
