/**
 * The agent's image receiver (lib/agent/receive.ts) against hostile sequences: whatever frames
 * arrive, files appear only inside the migration directory, 0600, never more than the limits
 * allow, and the only errors are the agent's own (ERR_AGENT_PROTOCOL, ERR_AGENT_LIMIT).
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import fc from 'fast-check';

import { MSG } from '../../../lib/agent/protocol';
import { receiveImages, type AgentLimits } from '../../../lib/agent/receive';

type Frame = { type: number; id: number; payload: Buffer };
const json = (type: number, body: unknown, id = 0): Frame => ({ type, id, payload: Buffer.from(JSON.stringify(body)) });
const LIMITS: AgentLimits = { maxImageBytes: 4096, maxFiles: 4, maxFileBytes: 2048 };

let root: string;
beforeEach(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'ncr-receive-'));
});
afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

function feeder(frames: Frame[]): () => Promise<Frame> {
  let i = 0;
  return async () => {
    if (i >= frames.length) throw Object.assign(new Error('channel closed'), { code: 'ERR_TRANSPORT_DISCONNECTED' });
    return frames[i++];
  };
}

function fileFrames(
  index: number,
  name: string,
  data: Buffer,
  sha = createHash('sha256').update(data).digest('hex'),
): Frame[] {
  return [
    json(MSG.FILE, { index, name, size: data.length }),
    { type: MSG.FILE_DATA, id: index, payload: data },
    json(MSG.FILE_END, { sha256: sha }),
  ];
}

it('receives files in order, 0600, checked, and reports the totals', async () => {
  const dir = path.join(root, 'm');
  fs.mkdirSync(dir, { mode: 0o700 });
  const a = Buffer.from('core image');
  const b = Buffer.alloc(1000, 7);
  const end = await receiveImages(
    dir,
    LIMITS,
    feeder([
      ...fileFrames(0, 'core-1.img', a),
      ...fileFrames(1, 'pages-1.img', b),
      json(MSG.IMAGES_END, { files: 2, bytes: a.length + b.length }),
    ]),
  );
  expect(end).toEqual({ files: 2, bytes: 1010 });
  expect(fs.readFileSync(path.join(dir, 'pages-1.img'))).toEqual(b);
  expect(fs.statSync(path.join(dir, 'core-1.img')).mode & 0o777).toBe(0o600);
});

it.each([
  ['a checksum mismatch', fileFrames(0, 'a.img', Buffer.from('x'), 'f'.repeat(64)), 'ERR_AGENT_PROTOCOL'],
  [
    'more data than announced',
    [json(MSG.FILE, { index: 0, name: 'a', size: 1 }), { type: MSG.FILE_DATA, id: 0, payload: Buffer.from('xy') }],
    'ERR_AGENT_PROTOCOL',
  ],
  [
    'a duplicate name',
    [...fileFrames(0, 'a', Buffer.from('x')), ...fileFrames(1, 'a', Buffer.from('x'))],
    'ERR_AGENT_PROTOCOL',
  ],
  ['an index out of order', fileFrames(1, 'a', Buffer.from('x')), 'ERR_AGENT_PROTOCOL'],
  [
    'a total over the limit',
    [
      ...fileFrames(0, 'a', Buffer.alloc(2048)),
      ...fileFrames(1, 'b', Buffer.alloc(2048)),
      json(MSG.FILE, { index: 2, name: 'c', size: 1 }),
    ],
    'ERR_AGENT_LIMIT',
  ],
  ['a file over the limit', [json(MSG.FILE, { index: 0, name: 'a', size: 2049 })], 'ERR_AGENT_PROTOCOL'],
  [
    'IMAGES_END that does not match',
    [...fileFrames(0, 'a', Buffer.from('x')), json(MSG.IMAGES_END, { files: 2, bytes: 1 })],
    'ERR_AGENT_PROTOCOL',
  ],
  ['RESTORE in the middle', [json(MSG.RESTORE, {})], 'ERR_AGENT_PROTOCOL'],
])('%s is refused', async (_name, frames, code) => {
  const dir = path.join(root, 'm');
  fs.mkdirSync(dir, { mode: 0o700 });
  await expect(receiveImages(dir, LIMITS, feeder(frames))).rejects.toMatchObject({ code });
});

it('arbitrary frame sequences write only plain files inside the directory, within the limits', async () => {
  const name = fc.oneof(
    fc.constantFrom('a', 'core-1.img', '../x', '/etc/x', 'a/b', '.x', ''),
    fc.string({ maxLength: 8 }),
  );
  const frame = fc.oneof(
    fc
      .record({ index: fc.integer({ min: -1, max: 5 }), name, size: fc.integer({ min: -1, max: 3000 }) })
      .map((b) => json(MSG.FILE, b)),
    fc
      .tuple(fc.integer({ min: 0, max: 5 }), fc.uint8Array({ maxLength: 600 }))
      .map(([id, d]) => ({ type: MSG.FILE_DATA, id, payload: Buffer.from(d) })),
    fc.constantFrom(
      json(MSG.FILE_END, { sha256: 'a'.repeat(64) }),
      json(MSG.IMAGES_END, { files: 0, bytes: 0 }),
      json(MSG.FILE_END, {}),
    ),
    fc.record({
      type: fc.integer({ min: 0, max: 20 }),
      id: fc.nat(),
      payload: fc.uint8Array({ maxLength: 64 }).map((u) => Buffer.from(u)),
    }),
  );
  let run = 0;
  await fc.assert(
    fc.asyncProperty(fc.array(frame, { maxLength: 12 }), async (frames) => {
      const dir = path.join(root, `m${run++}`);
      fs.mkdirSync(dir, { mode: 0o700 });
      try {
        await receiveImages(dir, LIMITS, feeder(frames));
      } catch (error) {
        expect(['ERR_AGENT_PROTOCOL', 'ERR_AGENT_LIMIT', 'ERR_TRANSPORT_DISCONNECTED']).toContain(
          (error as { code?: string }).code,
        );
      }
      const names = fs.readdirSync(dir);
      expect(names.length).toBeLessThanOrEqual(LIMITS.maxFiles);
      let total = 0;
      for (const n of names) {
        const st = fs.lstatSync(path.join(dir, n));
        expect(st.isFile()).toBe(true);
        total += st.size;
      }
      expect(total).toBeLessThanOrEqual(LIMITS.maxImageBytes);
      expect(fs.readdirSync(root).filter((n) => !n.startsWith('m'))).toEqual([]);
    }),
    { numRuns: 300 },
  );
});

it('a small file written in the background that fails (it exists) fails the transfer, once every write has ended', async () => {
  const dir = path.join(root, 'm');
  fs.mkdirSync(dir, { mode: 0o700 });
  fs.writeFileSync(path.join(dir, 'core-1.img'), 'there before', { mode: 0o600 });
  const files = ['core-1.img', 'fdinfo-2.img', 'files.img'].map((name, i) => ({
    name,
    data: Buffer.alloc(100 + i, i),
  }));
  const error = await receiveImages(
    dir,
    LIMITS,
    feeder([
      ...files.flatMap((f, i) => fileFrames(i, f.name, f.data)),
      json(MSG.IMAGES_END, { files: 3, bytes: files.reduce((n, f) => n + f.data.length, 0) }),
    ]),
  ).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toMatchObject({ code: 'EEXIST' });
  // Nothing is still being written when it rejects (the caller deletes the directory then).
  const after = fs.readdirSync(dir).sort();
  await new Promise((resolve) => setTimeout(resolve, 50));
  expect(fs.readdirSync(dir).sort()).toEqual(after);
  expect(fs.readFileSync(path.join(dir, 'core-1.img'), 'utf8')).toBe('there before');
});
