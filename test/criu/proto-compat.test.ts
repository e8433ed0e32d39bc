/**
 * proto/criu-rpc.proto is written by us; Debian's criu 4.2 rpc.proto (libcriu-dev, in the private
 * root scripts/install-criu.sh made) is the oracle. Every message, field (name, number, type,
 * label, default) and enum value must match; ours may only add what SUPERSET lists.
 */
import * as fs from 'node:fs';

import * as protobuf from 'protobufjs';

import { CRIU_RPC_PROTO_PATH, decodeRequest, encodeRequest } from '../../lib/criu/codec';
import { debianRpcProtoPath } from '../../lib/criu/locate';
import type { CriuOptsMessage } from '../../lib/criu/messages';

/** Exactly what ours adds to CRIU 4.2 (post-4.2 upstream additions, marked in the .proto). */
const SUPERSET = {
  types: ['criu_image_io_mode'],
  fields: ['criu_opts.image_io_mode'],
};

function load(file: string, keepCase: boolean): protobuf.Root {
  const root = new protobuf.Root().loadSync(file, { keepCase });
  root.resolveAll();
  return root;
}

function namedTypes(root: protobuf.Root): Map<string, protobuf.Type | protobuf.Enum> {
  const out = new Map<string, protobuf.Type | protobuf.Enum>();
  for (const item of root.nestedArray) {
    if (item instanceof protobuf.Type || item instanceof protobuf.Enum) out.set(item.name, item);
    else throw new Error(`unexpected top-level ${item.constructor.name} ${item.name}`);
  }
  return out;
}

function label(field: protobuf.Field): string {
  if (field.repeated) return 'repeated';
  return field.required ? 'required' : 'optional';
}

/** Everything that decides a field's wire compatibility, in comparable form. */
function fieldSignature(field: protobuf.Field): Record<string, unknown> {
  return {
    id: field.id,
    type: field.type,
    resolvedType: field.resolvedType?.fullName ?? null,
    label: label(field),
    default: field.options?.default ?? null,
    packed: field.repeated ? field.packed : null,
  };
}

const debianPath = debianRpcProtoPath();

describe("proto/criu-rpc.proto against Debian's criu 4.2 rpc.proto", () => {
  it("finds Debian's rpc.proto through the install cache", () => {
    expect(debianPath).toBeDefined();
    expect(fs.readFileSync(debianPath!, 'utf8')).toMatch(/^syntax = "proto2";/m);
  });

  const debian = load(debianPath!, true);
  const ours = load(CRIU_RPC_PROTO_PATH, true);
  const debianTypes = namedTypes(debian);
  const ourTypes = namedTypes(ours);

  it('declares the same messages and enums, plus only the listed superset', () => {
    const missing = [...debianTypes.keys()].filter((name) => !ourTypes.has(name));
    const extra = [...ourTypes.keys()].filter((name) => !debianTypes.has(name));
    expect(missing).toEqual([]);
    expect(extra.sort()).toEqual([...SUPERSET.types].sort());
    expect(debianTypes.size).toBe(19); // 15 messages + 4 enums
  });

  it('has 15 messages and 4 enums in CRIU 4.2 (sanity of the oracle)', () => {
    const messages = [...debianTypes.values()].filter((t) => t instanceof protobuf.Type);
    const enums = [...debianTypes.values()].filter((t) => t instanceof protobuf.Enum);
    expect(messages.map((m) => m.name).sort()).toEqual(
      [
        'cgroup_root',
        'criu_dump_resp',
        'criu_features',
        'criu_notify',
        'criu_opts',
        'criu_page_server_info',
        'criu_req',
        'criu_resp',
        'criu_restore_resp',
        'criu_veth_pair',
        'criu_version',
        'ext_mount_map',
        'inherit_fd',
        'join_namespace',
        'unix_sk',
      ].sort(),
    );
    expect(enums.map((e) => e.name).sort()).toEqual(
      ['criu_cg_mode', 'criu_network_lock_method', 'criu_pre_dump_mode', 'criu_req_type'].sort(),
    );
  });

  it('matches every field: name, number, type, label and default', () => {
    const differences: string[] = [];
    const extraFields: string[] = [];
    let compared = 0;
    for (const [name, theirs] of debianTypes) {
      if (!(theirs instanceof protobuf.Type)) continue;
      const mine = ourTypes.get(name) as protobuf.Type;
      for (const field of theirs.fieldsArray) {
        const ourField = mine.fields[field.name];
        if (ourField === undefined) {
          differences.push(`${name}.${field.name}: missing`);
          continue;
        }
        const a = JSON.stringify(fieldSignature(field));
        const b = JSON.stringify(fieldSignature(ourField));
        if (a !== b) differences.push(`${name}.${field.name}: debian ${a} ours ${b}`);
        compared++;
      }
      for (const field of mine.fieldsArray)
        if (theirs.fields[field.name] === undefined) extraFields.push(`${name}.${field.name}`);
      // No number may be reused under another name.
      for (const field of mine.fieldsArray) {
        const same = theirs.fieldsById[field.id];
        if (same !== undefined && same.name !== field.name)
          differences.push(`${name} #${field.id}: ${same.name} vs ${field.name}`);
      }
    }
    expect(differences).toEqual([]);
    expect(extraFields.sort()).toEqual([...SUPERSET.fields].sort());
    // criu_opts has 70 fields in 4.2: numbers 1..71 without the unused 40.
    expect((debianTypes.get('criu_opts') as protobuf.Type).fieldsArray).toHaveLength(70);
    expect(compared).toBeGreaterThan(100);
  });

  it('matches every enum value', () => {
    for (const [name, theirs] of debianTypes) {
      if (!(theirs instanceof protobuf.Enum)) continue;
      expect({ name, values: (ourTypes.get(name) as protobuf.Enum).values }).toEqual({ name, values: theirs.values });
    }
    expect((debianTypes.get('criu_req_type') as protobuf.Enum).values).toEqual({
      EMPTY: 0,
      DUMP: 1,
      RESTORE: 2,
      CHECK: 3,
      PRE_DUMP: 4,
      PAGE_SERVER: 5,
      NOTIFY: 6,
      CPUINFO_DUMP: 7,
      CPUINFO_CHECK: 8,
      FEATURE_CHECK: 9,
      VERSION: 10,
      WAIT_PID: 11,
      PAGE_SERVER_CHLD: 12,
      SINGLE_PRE_DUMP: 13,
    });
  });

  it("encodes a criu_req with every 4.2 field that Debian's schema decodes to the same values", () => {
    const theirReq = load(debianPath!, false).lookupType('criu_req');
    const opts: CriuOptsMessage = {
      imagesDirFd: 7,
      pid: 4242,
      leaveRunning: true,
      extUnixSk: false,
      tcpEstablished: true,
      evasiveDevices: true,
      shellJob: false,
      fileLocks: true,
      logLevel: 4,
      logFile: 'dump.log',
      ps: { address: '10.0.0.1', port: 9999, pid: 77, fd: 9 },
      notifyScripts: true,
      root: '/srv/root',
      parentImg: '../pre1',
      trackMem: false,
      autoDedup: true,
      workDirFd: 8,
      linkRemap: true,
      veths: [{ ifIn: 'veth0', ifOut: 'br0' }],
      cpuCap: 0xffffffff,
      forceIrmap: true,
      execCmd: ['/bin/true', '-x'],
      extMnt: [{ key: '/mnt', val: 'm1' }],
      manageCgroups: true,
      cgRoot: [{ ctrl: 'cpu', path: '/a' }, { path: '/b' }],
      rstSibling: true,
      inheritFd: [{ key: 'tcp[1]', fd: 3 }],
      autoExtMnt: true,
      extSharing: true,
      extMasters: true,
      skipMnt: ['/proc/x'],
      enableFs: ['nfs'],
      unixSkIno: [{ inode: 4000000000 }],
      manageCgroupsMode: 5,
      ghostLimit: 1 << 20,
      irmapScanPaths: ['/usr'],
      external: ['unix[123]', 'mnt[/x]:y'],
      emptyNs: 0x40000000,
      joinNs: [{ ns: 'net', nsFile: '/proc/1/ns/net', extraOpt: 'x' }],
      cgroupProps: 'p',
      cgroupPropsFile: '/p',
      cgroupDumpController: ['cpu', 'memory'],
      freezeCgroup: '/sys/fs/cgroup/f',
      timeout: 30,
      tcpSkipInFlight: true,
      weakSysctls: true,
      lazyPages: false,
      statusFd: 11,
      orphanPtsMaster: true,
      configFile: '/etc/criu.conf',
      tcpClose: true,
      lsmProfile: 'apparmor:x',
      tlsCacert: '/c',
      tlsCacrl: '/r',
      tlsCert: '/t',
      tlsKey: '/k',
      tls: true,
      tlsNoCnVerify: true,
      cgroupYard: '/y',
      preDumpMode: 2,
      pidfdStoreSk: 12,
      lsmMountContext: 'ctx',
      networkLock: 2,
      mntnsCompatMode: true,
      skipFileRwxCheck: true,
      unprivileged: true,
      imagesDir: '/img',
      leaveStopped: true,
      displayStats: true,
      logToStderr: true,
    };
    // Every 4.2 criu_opts field is set above (the superset field is not).
    const theirOptFields = theirReq
      .lookupType('criu_opts')
      .fieldsArray.map((f) => f.name)
      .sort();
    expect(Object.keys(opts).sort()).toEqual(theirOptFields);

    const bytes = encodeRequest({
      type: 1,
      opts,
      notifySuccess: true,
      keepOpen: false,
      features: { memTrack: true, lazyPages: false, pidfdStore: true },
      pid: 4000000000,
    });
    const decodedByDebian = theirReq.toObject(theirReq.decode(bytes), {
      defaults: false,
      enums: Number,
      longs: Number,
    });
    expect(decodedByDebian).toEqual({
      type: 1,
      opts,
      notifySuccess: true,
      keepOpen: false,
      features: { memTrack: true, lazyPages: false, pidfdStore: true },
      pid: 4000000000,
    });
    // And back: Debian's encoding decodes identically with ours.
    expect(decodeRequest(theirReq.encode(theirReq.fromObject(decodedByDebian)).finish())).toEqual(decodedByDebian);
  });

  it('keeps the post-4.2 image_io_mode field at number 72, after every 4.2 number', () => {
    const criuOpts = ourTypes.get('criu_opts') as protobuf.Type;
    expect(fieldSignature(criuOpts.fields.image_io_mode)).toEqual({
      id: 72,
      type: 'criu_image_io_mode',
      resolvedType: '.criu_image_io_mode',
      label: 'optional',
      default: 'IMAGE_IO_WRITEBACK',
      packed: null,
    });
    expect((ourTypes.get('criu_image_io_mode') as protobuf.Enum).values).toEqual({
      IMAGE_IO_WRITEBACK: 0,
      IMAGE_IO_DIRECT: 1,
    });
    const debianOpts = debianTypes.get('criu_opts') as protobuf.Type;
    expect(Math.max(...debianOpts.fieldsArray.map((f) => f.id))).toBe(71);
  });
});
