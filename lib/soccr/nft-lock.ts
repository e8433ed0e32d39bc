/** The nftables lock (lib/soccr/nft/): its class, tuple keys, and the sweep of stale tables. */
export { isNftablesLock, NftablesLock, processLock } from './nft/lock';
export type { ConnectionTuple } from './nft/keys';
export { sweepStaleLocks } from './nft/sweep';
export type { SweptLock } from './nft/sweep';
