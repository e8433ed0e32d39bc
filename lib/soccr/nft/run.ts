/**
 * The lock's nft runs (lib/sys/nft.ts) with their failures as NftablesLockError. The code comes
 * from structured facts, not nft's words: nft missing (ERR_NFT_NOT_FOUND), the namespace file
 * gone (ENOENT: its tables went with it), a capability this process lacks (EPERM).
 */
import * as fs from 'node:fs';

import { attachCapabilityProblem, capabilityProblem, missingCapabilities } from '../../capabilities';
import type { CommandError } from '../../sys/errors';
import { NftablesLockError } from '../errors';

/** `error` (from lib/sys/nft.ts) as an NftablesLockError. */
function lockError(error: unknown, netns: string | undefined): NftablesLockError {
  const e = error as CommandError;
  const message = `nft failed: ${e.message}`;
  if (e.code === 'ERR_COMMAND_NOT_FOUND')
    return new NftablesLockError(`cannot run ${e.command ?? 'nft'}: ${e.message}`, {
      code: 'ERR_NFT_NOT_FOUND',
      cause: error,
    });
  if (netns !== undefined && !fs.existsSync(netns))
    return new NftablesLockError(`${message} (no namespace ${netns})`, { code: 'ENOENT', cause: error });
  // nsenter cannot enter the namespace without CAP_SYS_ADMIN, nft cannot talk to nftables without CAP_NET_ADMIN.
  const operation =
    netns !== undefined && missingCapabilities(['CAP_SYS_ADMIN']).length > 0
      ? 'netns'
      : missingCapabilities(['CAP_NET_ADMIN']).length > 0
        ? 'nftables'
        : undefined;
  // With every capability present, a refusal (a user namespace, an LSM) has no structured sign:
  // nft runs with LC_ALL=C, so strerror(EPERM)'s text is fixed.
  const refused = operation !== undefined || /Operation not permitted/.test(e.stderr ?? '');
  if (!refused) return new NftablesLockError(message, { code: 'ERR_NFT_FAILED', cause: error });
  const typed = new NftablesLockError(message, { code: 'EPERM', cause: error });
  return attachCapabilityProblem(typed, capabilityProblem(operation ?? 'nftables'));
}

/** Runs `body` (nft calls for a lock in `netns`), turning its failure into an NftablesLockError. */
export async function asLockError<T>(netns: string | undefined, body: () => Promise<T>): Promise<T> {
  try {
    return await body();
  } catch (error) {
    throw lockError(error, netns);
  }
}
