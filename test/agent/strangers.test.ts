/**
 * Who the agent serves. Peers without a certificate chaining to its CA (another CA, none, an
 * expired one, plain TCP speaking valid 'NCAG' frames) get nothing: no frame back, no file in its
 * work dir (seen through /proc/<agent>/root), no nftables table, no address, no CRIU in B.
 * Authenticated peers asking for what the agent does not allow are refused, and a second session
 * while one runs gets ERR_AGENT_BUSY. Afterwards the agent still moves a streaming server.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { Criu, locateCriu } from '../../lib';
import { expectEveryConnectionExact } from '../helpers/traffic';
import { AGENT_PORT, AgentLab, type AgentProcess } from './agent-lab';
import { hello, runPeer, wholeSession, type PeerFrame } from './agent-peer';

const PIPE_MAX = '/proc/sys/fs/pipe-max-size';
const STREAM = { connections: 2, total: 12 * 1024 * 1024, paceBytes: 8192, paceMs: 5 };

let lab: AgentLab;
let agent: AgentProcess;
let criuVersion: string;

beforeAll(async () => {
  const criuPath = locateCriu().path;
  const criu = new Criu({ criuPath });
  try {
    criuVersion = (await criu.version()).text;
  } finally {
    await criu.close();
  }
  lab = new AgentLab(criuPath);
  agent = await lab.startAgent();
}, 60_000);

afterAll(async () => {
  await lab?.destroy();
});

/** Nothing was written, locked, added or started on B, and the agent still runs. */
function expectNothingOnB(): void {
  expect(lab.agentWorkDir(agent.pid)).toEqual([]);
  expect(lab.nftTables(lab.B)).not.toMatch(/node_criu_agent|CRIU/);
  expect(lab.hasAddress(lab.B)).toBe(false);
  const inB = lab.criuProcesses().filter((pid) => {
    try {
      return fs.statSync(`/proc/${pid}/ns/net`).ino === lab.netnsInode(lab.B);
    } catch {
      return false;
    }
  });
  expect(inB).toEqual([]);
  expect(agent.child.exitCode).toBeNull();
}

const target = (): { host: string; port: number } => ({ host: lab.B.address, port: AGENT_PORT });

describe.each([
  ['a client certificate from another CA', { cert: 'stranger-client', key: 'stranger-client-key' }],
  ['no client certificate', {}],
  ['an expired client certificate', { cert: 'expired-client', key: 'expired-client-key' }],
] as const)('%s', (_name, creds) => {
  it('gets no frame and changes nothing on B', async () => {
    const refusedBefore = agent.events.filter((e) => e.event === 'tls-refused').length;
    const tls = {
      ca: lab.pki.file('ca'),
      ...('cert' in creds ? { cert: lab.pki.file(creds.cert), key: lab.pki.file(creds.key) } : {}),
    };
    const peer = runPeer(lab.hosts, lab.C, { ...target(), tls, frames: wholeSession(criuVersion) });
    await peer.waitFor('closed');
    expect(peer.events.filter((e) => e.event === 'frame')).toEqual([]);
    await agent.waitEvent(
      (e) => e.event === 'tls-refused' && agent.events.filter((x) => x.event === 'tls-refused').length > refusedBefore,
      'the agent to log the refusal',
    );
    expect(agent.events.filter((e) => e.event === 'hello')).toEqual([]);
    expectNothingOnB();
  });
});

it('a plain TCP client speaking valid NCAG frames gets nothing and changes nothing', async () => {
  const peer = runPeer(lab.hosts, lab.C, { ...target(), tls: false, frames: wholeSession(criuVersion) });
  await peer.waitFor('closed');
  expect(peer.events.filter((e) => e.event === 'frame')).toEqual([]);
  expect(agent.events.filter((e) => e.event === 'hello')).toEqual([]);
  expectNothingOnB();
});

describe('authenticated peers asking for what the agent does not allow', () => {
  const good = (): { cert: string; key: string; ca: string } => ({
    cert: lab.pki.file('client'),
    key: lab.pki.file('client-key'),
    ca: lab.pki.file('ca'),
  });
  const refusal = async (frames: PeerFrame[]): Promise<unknown> => {
    const peer = runPeer(lab.hosts, lab.C, { ...target(), tls: good(), frames });
    await peer.waitFor('closed');
    return peer.events.filter((e) => e.event === 'frame').map((e) => ({ type: e.type, body: e.body }));
  };

  it.each([
    ['the connections route', [hello('x', { route: 'connections' })], 3, 'ERR_AGENT_ROUTE_UNSUPPORTED'],
    [
      'an address it may not take',
      [hello('x', { moveAddress: { cidr: '10.77.0.50/24', device: 'eth0' } })],
      3,
      'ERR_AGENT_ADDRESS_NOT_ALLOWED',
    ],
    ['another CRIU version', [hello('3.17')], 3, 'ERR_AGENT_CRIU_VERSION'],
    ['a malformed HELLO', [{ type: 1, body: { version: 1, route: 'process', extra: true } }], 9, 'ERR_AGENT_PROTOCOL'],
  ] as const)('%s is refused', async (_name, frames, type, code) => {
    const first = frames[0] as PeerFrame;
    const fixed =
      (first.body as { criuVersion?: string } | undefined)?.criuVersion === 'x'
        ? [{ ...first, body: { ...(first.body as object), criuVersion } }]
        : [...frames];
    const seen = (await refusal(fixed)) as Array<{ type: number; body: { code: string } }>;
    expect(seen).toHaveLength(1);
    expect(seen[0]).toMatchObject({ type, body: { code } });
    expectNothingOnB();
  });

  /** Runs `body` with fs.pipe-max-size set to `bytes` (CRIU's lazy page pipe), then puts it back. */
  const withPipeMax = async (bytes: number, body: () => Promise<void>): Promise<void> => {
    const before = fs.readFileSync(PIPE_MAX, 'utf8').trim();
    fs.writeFileSync(PIPE_MAX, String(bytes));
    try {
      await body();
    } finally {
      fs.writeFileSync(PIPE_MAX, before);
    }
  };

  it('lazy pages where CRIU cannot get its 4 MiB pipe are refused', async () => {
    // Only where it applies (the sysctl is machine-wide: not lowered here, other runs may need it).
    const status = fs.readFileSync('/proc/self/status', 'utf8');
    const caps = BigInt(`0x${/CapEff:\s*([0-9a-f]+)/.exec(status)?.[1] ?? '0'}`);
    if ((caps >> 24n) & 1n || Number(fs.readFileSync(PIPE_MAX, 'utf8')) >= 4 * 1024 * 1024) return;
    const seen = (await refusal([hello(criuVersion, { lazyPages: true })])) as Array<{ type: number; body: unknown }>;
    expect(seen).toEqual([{ type: 3, body: expect.objectContaining({ code: 'ERR_LAZY_PAGES_PIPE_SIZE' }) }]);
    expectNothingOnB();
  });

  it('a page frame before the attach point (RESTORE) ends a lazy session, nothing written', async () => {
    await withPipeMax(4 * 1024 * 1024, async () => {
      const seen = (await refusal([
        hello(criuVersion, { lazyPages: true }),
        { type: 13, id: 0, data: Buffer.from('page').toString('base64') },
      ])) as Array<{ type: number; body: { code: string; message: string } }>;
      expect(seen.map((f) => f.type)).toEqual([2, 9]);
      expect(seen[1].body).toMatchObject({ code: 'ERR_AGENT_PROTOCOL', message: expect.stringContaining('PAGE_DATA') });
    });
    await agent.waitEvent((e) => e.event === 'session-end', 'the session to end');
    expectNothingOnB();
  });

  it('a file name with a path in it ends the session, nothing written', async () => {
    const seenTraversal = (await refusal(
      wholeSession(criuVersion).map((f) =>
        f.type === 4 ? { ...f, body: { index: 0, name: '../escape', size: 12 } } : f,
      ),
    )) as Array<{ type: number; body: { code: string } }>;
    expect(seenTraversal.map((f) => f.type)).toEqual([2, 9]);
    expect(seenTraversal[1].body.code).toBe('ERR_AGENT_PROTOCOL');
    expect(fs.existsSync(path.join(path.dirname(lab.B.workDir), 'escape'))).toBe(false);
    await agent.waitEvent((e) => e.event === 'session-end', 'the session to end');
    expectNothingOnB();
  });
});

it('refuses a second source while busy, rejects an expired source, then moves the good one exactly', async () => {
  const pair = await lab.startPair('after-strangers', STREAM);
  await pair.waitFlowing(256 * 1024);
  const before = lab.clientResets();
  // An authenticated peer holds the agent after WELCOME.
  const holder = runPeer(lab.hosts, lab.C, {
    ...target(),
    tls: { cert: lab.pki.file('client'), key: lab.pki.file('client-key'), ca: lab.pki.file('ca') },
    frames: [hello(criuVersion)],
    stay: true,
  });
  await holder.waitFor('frame');
  const busy = await lab.migrate(pair.serverPid);
  expect(busy).toMatchObject({ code: 5, json: { ok: false, error: { code: 'ERR_AGENT_BUSY', serverOn: 'source' } } });
  holder.kill();
  const expired = await lab.migrate(pair.serverPid, { credentials: 'expired-client' });
  expect(expired).toMatchObject({
    code: 5,
    json: {
      ok: false,
      error: { code: expect.stringMatching(/^ERR_TLS_HANDSHAKE$|^ERR_TRANSPORT_DISCONNECTED$/), serverOn: 'source' },
    },
  });
  expect(lab.hasAddress(lab.A)).toBe(true);
  expect(fs.statSync(`/proc/${pair.serverPid}/ns/net`).ino).toBe(lab.netnsInode(lab.A));

  const run = await lab.migrate(pair.serverPid);
  expect({ code: run.code, stderr: run.code === 0 ? '' : run.stderr }).toEqual({ code: 0, stderr: '' });
  expect(fs.statSync(`/proc/${pair.serverPid}/ns/net`).ino).toBe(lab.netnsInode(lab.B));
  const { clients, server } = await pair.reports();
  expectEveryConnectionExact(clients, server, STREAM);
  expect(lab.clientResets()).toEqual(before);
  expect(lab.agentWorkDir(agent.pid)).toEqual([]);
  expect(lab.nftTables(lab.B)).not.toMatch(/node_criu_agent|CRIU/);
}, 120_000);
