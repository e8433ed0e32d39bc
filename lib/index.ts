/** node-criu: TCP connection checkpoint/restore (libsoccr) and a CRIU-RPC client. */
export * from './errors';
export * from './soccr';
// A data property rather than export *'s accessor: every soccr.* call reads it (lib/soccr/soccr.ts).
import { soccr as soccrNamespace } from './soccr';
export import soccr = soccrNamespace;
export * from './criu';
export * from './transport';
export * from './migration';
export * from './agent';
export { CommandError } from './sys/errors';
export { AddressError } from './sys/errors';
export { addAddress, announceAddress, removeAddress } from './sys/address';
export type { AddAddressOptions, AddressChangeOptions, AnnounceAddressOptions } from './sys/address';
