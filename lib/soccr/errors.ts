/** Error classes of the libsoccr half. All extend NodeCriuError: `code` is always set. */
import { NodeCriuError } from '../errors';
import type { NodeCriuErrorOptions } from '../errors';

/**
 * A checkpoint or restore step failed: the kernel or libsoccr said no (code is the errno name:
 * 'EPERM' without CAP_NET_ADMIN, 'ENOTCONN', 'EADDRNOTAVAIL' when the 4-tuple is still in use or
 * the local address is missing, ...), or the socket is not one that can be checkpointed
 * ('ERR_SOCKET_DESTROYED', 'ERR_SOCKET_NOT_TCP', 'ERR_SOCKET_LISTENING', 'ERR_SOCKET_CONNECTING',
 * 'ERR_SOCKET_STATE', 'ERR_FLUSH_TIMEOUT').
 */
export class SoccrError extends NodeCriuError {
  constructor(message: string, options: NodeCriuErrorOptions) {
    super(message, options);
  }
}

/** A connection image failed validation or decoding; code 'ERR_CONNECTION_IMAGE_INVALID'. */
export class ConnectionImageError extends NodeCriuError {
  constructor(message: string, options: Partial<NodeCriuErrorOptions> = {}) {
    super(message, { ...options, code: options.code ?? 'ERR_CONNECTION_IMAGE_INVALID' });
  }
}

/**
 * The nftables lock could not be installed or removed: 'ERR_NFT_NOT_FOUND' when the `nft`
 * binary is missing (scripts/prepare-test-host.sh installs Debian's nftables), 'EPERM' (with
 * `capability`) when nft or nsenter was refused for lack of a capability, 'ERR_NFT_FAILED'
 * when nft rejected the batch (its stderr is in the message).
 */
export class NftablesLockError extends NodeCriuError {
  constructor(message: string, options: NodeCriuErrorOptions) {
    super(message, options);
  }
}

export { describeValue } from '../errors';
