/**
 * CRIU's RPC messages as lib/criu/codec.ts encodes and decodes them, derived from the types
 * generated from proto/criu-rpc.proto (lib/generated/criu-rpc.ts): camelCase fields, enums as
 * their numbers, nested messages as plain objects. Absent on the wire is absent here (the codec
 * never fills in proto2 defaults), so the generated `| null` goes.
 */
import * as rpc from '../generated/criu-rpc';

/** A generated enum type as the union of its numbers; any other number type stays as it is. */
type EnumNumber<E> = E extends number ? (`${E}` extends `${infer N extends number}` ? N : never) : never;

type WireValue<V> = V extends Uint8Array
  ? V
  : V extends readonly (infer Item)[]
    ? WireValue<Item>[]
    : V extends object
      ? WireMessage<V>
      : V extends number
        ? EnumNumber<V>
        : V;

/** A generated `$Properties` interface as the codec's plain object. */
export type WireMessage<P> = {
  [K in keyof P as K extends '$unknowns' ? never : K]: WireValue<Exclude<P[K], null | undefined>>;
};

/** A generated enum as a frozen name → number object (without TypeScript's reverse mapping). */
function enumObject<E extends Record<string, string | number>>(
  generated: E,
): { readonly [K in keyof E]: EnumNumber<E[K]> } {
  const entries = Object.entries(generated).filter(([, value]) => typeof value === 'number');
  return Object.freeze(Object.fromEntries(entries)) as { readonly [K in keyof E]: EnumNumber<E[K]> };
}

export const CriuReqType = enumObject(rpc.criu_req_type);
export type CriuReqType = (typeof CriuReqType)[keyof typeof CriuReqType];

/** criu_cg_mode: how CRIU manages cgroups (manage_cgroups_mode). */
export const CriuCgMode = enumObject(rpc.criu_cg_mode);
export type CriuCgMode = (typeof CriuCgMode)[keyof typeof CriuCgMode];

/** criu_network_lock_method: how CRIU blocks traffic of dumped TCP connections. */
export const CriuNetworkLockMethod = enumObject(rpc.criu_network_lock_method);
export type CriuNetworkLockMethod = (typeof CriuNetworkLockMethod)[keyof typeof CriuNetworkLockMethod];

/** criu_pre_dump_mode: how pre-dump reads memory. */
export const CriuPreDumpMode = enumObject(rpc.criu_pre_dump_mode);
export type CriuPreDumpMode = (typeof CriuPreDumpMode)[keyof typeof CriuPreDumpMode];

/** criu_image_io_mode (field 72): newer than CRIU 4.2, which ignores it. */
export const CriuImageIoMode = enumObject(rpc.criu_image_io_mode);
export type CriuImageIoMode = (typeof CriuImageIoMode)[keyof typeof CriuImageIoMode];

const reqTypeNames: ReadonlyMap<number, string> = new Map(
  Object.entries(CriuReqType).map(([name, value]) => [value, name]),
);

/** 'DUMP' for 1; 'UNKNOWN(42)' for a number the schema does not define. */
export function reqTypeName(type: number): string {
  return reqTypeNames.get(type) ?? `UNKNOWN(${type})`;
}

/** criu_page_server_info. `fd` is a number in criu's own fd table (swrk only). */
export type CriuPageServerInfoMessage = WireMessage<rpc.criu_page_server_info.$Properties>;
/** criu_veth_pair (deprecated upstream; use `external` 'veth[IFIN]:OUTNAME'). */
export type CriuVethPairMessage = WireMessage<rpc.criu_veth_pair.$Properties>;
/** ext_mount_map (deprecated upstream; use `external` 'mnt[KEY]:VAL'). */
export type ExtMountMapMessage = WireMessage<rpc.ext_mount_map.$Properties>;
export type JoinNamespaceMessage = WireMessage<rpc.join_namespace.$Properties>;
/** inherit_fd. `fd` is a number in criu's own fd table (swrk only). */
export type InheritFdMessage = WireMessage<rpc.inherit_fd.$Properties>;
export type CgroupRootMessage = WireMessage<rpc.cgroup_root.$Properties>;
/** unix_sk (deprecated upstream; use `external` 'unix[INO]'). */
export type UnixSkMessage = WireMessage<rpc.unix_sk.$Properties>;
/** criu_opts: images_dir_fd is required on the wire (-1 when `imagesDir` travels as a path). */
export type CriuOptsMessage = WireMessage<rpc.criu_opts.$Properties>;
export type CriuFeaturesMessage = WireMessage<rpc.criu_features.$Properties>;
export type CriuRequestMessage = WireMessage<rpc.criu_req.$Properties>;
export type CriuDumpRespMessage = WireMessage<rpc.criu_dump_resp.$Properties>;
export type CriuRestoreRespMessage = WireMessage<rpc.criu_restore_resp.$Properties>;
export type CriuNotifyMessage = WireMessage<rpc.criu_notify.$Properties>;
export type CriuVersionMessage = WireMessage<rpc.criu_version.$Properties>;
export type CriuResponseMessage = WireMessage<rpc.criu_resp.$Properties>;
