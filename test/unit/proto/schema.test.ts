/**
 * The codecs' run-time schemas (built from the generated descriptors) against proto/ itself, and
 * the wire types and enum constants messages.ts derives from the generated types.
 */
import * as path from 'node:path';

import * as protobuf from 'protobufjs';

import { CRIU_RPC_PROTO_PATH, criuRpcRoot } from '../../../lib/criu/codec';
import {
  CriuCgMode,
  CriuImageIoMode,
  CriuNetworkLockMethod,
  CriuPreDumpMode,
  CriuReqType,
  reqTypeName,
  type CriuOptsMessage,
  type CriuRequestMessage,
  type CriuResponseMessage,
} from '../../../lib/criu/messages';
import descriptor from '../../../lib/generated/connection-image.json';

/** Every type of `root`, by full name, with what decides its wire format. */
function signatures(root: protobuf.Root): Record<string, unknown> {
  root.resolveAll();
  const out: Record<string, unknown> = {};
  const visit = (namespace: protobuf.NamespaceBase): void => {
    for (const item of namespace.nestedArray) {
      if (item instanceof protobuf.Enum) out[item.fullName] = { values: item.values };
      if (item instanceof protobuf.Type) {
        out[item.fullName] = item.fieldsArray.map((field) => ({
          name: field.name,
          id: field.id,
          type: field.type,
          resolvedType: field.resolvedType?.fullName ?? null,
          required: field.required,
          repeated: field.repeated,
          packed: field.repeated ? field.packed : null,
          default: field.options?.default ?? null,
        }));
      }
      if (item instanceof protobuf.Namespace) visit(item);
    }
  };
  visit(root);
  return out;
}

function fromProto(file: string): protobuf.Root {
  return new protobuf.Root().loadSync(file, { keepCase: false });
}

describe('generated descriptors', () => {
  it('criu-rpc: the codec sees the schema of proto/criu-rpc.proto', () => {
    const expected = signatures(fromProto(CRIU_RPC_PROTO_PATH));
    expect(Object.keys(expected)).toHaveLength(20); // 15 messages + 5 enums
    expect(signatures(criuRpcRoot())).toEqual(expected);
  });

  it('connection-image: the image codec sees the schema of proto/connection-image.proto', () => {
    const file = path.join(__dirname, '..', '..', '..', 'proto', 'connection-image.proto');
    const expected = signatures(fromProto(file));
    expect(Object.keys(expected)).toHaveLength(4);
    expect(signatures(protobuf.Root.fromJSON(descriptor))).toEqual(expected);
  });
});

describe('messages.ts', () => {
  it('enum constants are the schema enums, without reverse mappings', () => {
    const root = criuRpcRoot();
    expect(CriuReqType).toEqual(root.lookupEnum('criu_req_type').values);
    expect(CriuCgMode).toEqual(root.lookupEnum('criu_cg_mode').values);
    expect(CriuNetworkLockMethod).toEqual(root.lookupEnum('criu_network_lock_method').values);
    expect(CriuPreDumpMode).toEqual(root.lookupEnum('criu_pre_dump_mode').values);
    expect(CriuImageIoMode).toEqual(root.lookupEnum('criu_image_io_mode').values);
    expect(Object.isFrozen(CriuReqType)).toBe(true);
  });

  it('reqTypeName names every request type and marks unknown numbers', () => {
    expect(reqTypeName(CriuReqType.FEATURE_CHECK)).toBe('FEATURE_CHECK');
    expect(reqTypeName(13)).toBe('SINGLE_PRE_DUMP');
    expect(reqTypeName(42)).toBe('UNKNOWN(42)');
  });

  it('wire types: enums as number unions, no null, required fields required (checked by tsc)', () => {
    type Same<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
    const checks: true[] = [
      true satisfies Same<CriuRequestMessage['type'], 0 | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9 | 10 | 11 | 12 | 13>,
      true satisfies Same<CriuReqType, CriuRequestMessage['type']>,
      true satisfies Same<CriuOptsMessage['imagesDirFd'], number>,
      true satisfies Same<CriuOptsMessage['networkLock'], 1 | 2 | 3 | undefined>,
      true satisfies Same<CriuOptsMessage['veths'], { ifIn: string; ifOut: string }[] | undefined>,
      true satisfies Same<CriuResponseMessage['dump'], { restored?: boolean } | undefined>,
      true satisfies Same<typeof CriuReqType.DUMP, 1>,
    ];
    // @ts-expect-error null is not a wire value (absent is undefined)
    const withNull: CriuOptsMessage = { imagesDirFd: -1, pid: null };
    // @ts-expect-error images_dir_fd is required
    const withoutFd: CriuOptsMessage = {};
    // @ts-expect-error protobufjs's $unknowns is not part of the codec's objects
    const withUnknowns: CriuOptsMessage = { imagesDirFd: -1, $unknowns: [] };
    expect([checks.length, withNull, withoutFd, withUnknowns].length).toBe(4);
  });
});
