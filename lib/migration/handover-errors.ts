/** Errors of the connection handover (lib/migration/connections*.ts). */
import { closeSync } from 'node:fs';

import { NodeCriuError } from '../errors';

/**
 * A handover did not complete. code:
 *   ERR_HANDOVER_REFUSED       the target said no (its reason is in the message)
 *   ERR_HANDOVER_PEER_ABORTED  the other side sent ABORT
 *   ERR_HANDOVER_CHANNEL_CLOSED the control channel broke (the other process died or closed it)
 *   ERR_HANDOVER_CONNECT / ERR_HANDOVER_LISTEN   the channel could not be set up
 *   ERR_HANDOVER_PROTOCOL / ERR_HANDOVER_VERSION a malformed frame or a different protocol version
 *   ERR_HANDOVER_FDS_UNSUPPORTED fd passing asked of a stream channel
 *   ERR_HANDOVER_TIMEOUT / ERR_HANDOVER_ABORTED  timeoutMs elapsed, or our TCP gave up on the peer
 *                              (ETIMEDOUT, EPERM, unreachable) / the signal aborted
 *   ERR_HANDOVER_ADDRESS       the moveAddress hook failed
 *   ERR_HANDOVER_TLS_REQUIRED  a TCP channel without mutual TLS (refused before connecting/listening)
 *   ERR_HANDOVER_TLS           the TLS handshake failed (certificate refused by either side)
 *   ERR_HANDOVER_UNTRUSTED_PEER a unix-socket peer running as neither root nor our uid
 *   ERR_HANDOVER_NOT_ALLOWED   (target) a connection outside `allow` or not announced in HELLO
 * On the source, `resumed` tells how many connections are back with the application (every one
 * that was not confirmed by the target, unless `lost` says otherwise), `closed` how many had
 * closed meanwhile (given back too), `uncertain` how many were released after DONE without the
 * target's COMMITTED (timeout: the target may own them, or nobody does; never both sides).
 */
export class HandoverError extends NodeCriuError {
  resumed = 0;
  lost = 0;
  closed = 0;
  uncertain = 0;
  constructor(message: string, code: string, cause?: unknown) {
    super(message, cause === undefined ? { code } : { code, cause });
  }
}

export function closeFdQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // already closed
  }
}
