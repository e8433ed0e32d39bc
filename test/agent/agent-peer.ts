/** Runs test/fixtures/agent-peer.js (a hand-made 'NCAG' peer) on a lab host and collects what it saw. */
import { randomBytes } from 'node:crypto';
import * as path from 'node:path';

import type { HostLab, LabHost } from '../helpers/hosts';
import { waitUntil } from '../helpers/wait';

const PEER = path.join(__dirname, '..', 'fixtures', 'agent-peer.js');

export interface PeerFrame {
  type: number;
  id?: number;
  body?: object;
  data?: string;
}

export interface PeerRun {
  events: Array<{ event: string; type?: number; body?: unknown; code?: string }>;
  kill(): void;
  /** Resolves when the peer has seen `event` (bounded). */
  waitFor(event: string, timeoutMs?: number): Promise<void>;
}

export function hello(criuVersion: string, extra: Record<string, unknown> = {}): PeerFrame {
  return {
    type: 1,
    body: {
      version: 1,
      route: 'process',
      migrationId: randomBytes(16).toString('hex'),
      criuVersion,
      kernel: 'test',
      tuples: [],
      lazyPages: false,
      ...extra,
    },
  };
}

/** A full session's frames after HELLO: one small file, IMAGES_END, RESTORE. */
export function wholeSession(criuVersion: string, name = 'core-1.img'): PeerFrame[] {
  const data = Buffer.from('not an image');
  const sha256 = require('node:crypto').createHash('sha256').update(data).digest('hex') as string;
  return [
    hello(criuVersion),
    { type: 4, body: { index: 0, name, size: data.length } },
    { type: 5, id: 0, data: data.toString('base64') },
    { type: 6, body: { sha256 } },
    { type: 7, body: { files: 1, bytes: data.length } },
    { type: 10, body: {} },
  ];
}

export function runPeer(
  hosts: HostLab,
  host: LabHost,
  config: {
    host: string;
    port: number;
    tls: false | { cert?: string; key?: string; ca: string };
    frames: PeerFrame[];
    stay?: boolean;
  },
): PeerRun {
  const child = hosts.spawnOnHost(host, process.execPath, [PEER, JSON.stringify(config)], { privateMount: false });
  const events: PeerRun['events'] = [];
  let buffered = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    buffered += chunk;
    const lines = buffered.split('\n');
    buffered = lines.pop() ?? '';
    for (const line of lines) if (line.trim() !== '') events.push(JSON.parse(line) as PeerRun['events'][number]);
  });
  return {
    events,
    kill: () => child.kill('SIGKILL'),
    waitFor: (event, timeoutMs = 20000) =>
      waitUntil(() => events.some((e) => e.event === event), {
        what: `the peer to see ${event}`,
        timeoutMs,
        detail: () => JSON.stringify(events),
      }),
  };
}
