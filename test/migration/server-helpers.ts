/** Shared by the server-handover load tests: the fixtures, and the end of a handover under load. */
import * as path from 'node:path';

import { waitUntil } from '../helpers/wait';
import type { FixtureProcess } from './connections-helpers';

export const HTTP_SERVER = path.join(__dirname, '..', 'fixtures', 'http-server.js');
export const HTTP_LOAD = path.join(__dirname, '..', 'fixtures', 'http-load.js');

export interface Stats {
  pid: number;
  served: number;
  connections: number;
  listening: boolean;
}

export interface LoadReport {
  errors: number;
  timeouts: number;
  non2xx: number;
  responses: number;
  pids: Record<string, number>;
  connections: number;
  gaps: number;
  switches: number;
  switchedBack: number;
  bad: number;
  problems: string[];
  clientErrors: Record<string, number>;
}

/** Waits until the clients got `count` more responses from `pid`. */
export async function responsesFrom(load: FixtureProcess, pid: number, count: number): Promise<void> {
  const progress = () => load.request<{ pids: Record<string, number> }>({ cmd: 'progress' });
  const base = (await progress()).pids[pid] ?? 0;
  await waitUntil(async () => ((await progress()).pids[pid] ?? 0) >= base + count, {
    what: `${count} responses from ${pid}`,
    timeoutMs: 60000,
  });
}

/**
 * After a handover of `connections` under load: the successor answers (2000 more responses),
 * holds every connection and listens while the source holds none and does not, and no RST has
 * reached a client (`rstsIntoClients` counts them since the load started); then the load stops
 * and its report must be clean, every connection answered by the source, then the successor.
 * RSTs are judged before the stop: a client that closes with pipelined requests the server has
 * not read yet gets one from the server's close, which is the clients' teardown, not the move.
 */
export async function finishLoad(
  clients: FixtureProcess,
  source: FixtureProcess,
  target: FixtureProcess,
  connections: number,
  rstsIntoClients: () => number,
): Promise<LoadReport> {
  const sourcePid = (await source.request<Stats>({ cmd: 'stats' })).pid;
  const targetPid = (await target.request<Stats>({ cmd: 'stats' })).pid;
  await responsesFrom(clients, targetPid, 2000);
  expect(rstsIntoClients()).toBe(0);
  expect(await source.request<Stats>({ cmd: 'stats' })).toMatchObject({ connections: 0, listening: false });
  expect(await target.request<Stats>({ cmd: 'stats' })).toMatchObject({ connections, listening: true });
  const { report } = await clients.request<{ report: LoadReport }>({ cmd: 'stop' });
  expect(report).toMatchObject({
    errors: 0,
    timeouts: 0,
    non2xx: 0,
    bad: 0,
    gaps: 0,
    switchedBack: 0,
    problems: [],
    clientErrors: {},
    connections,
    switches: connections,
  });
  expect(Object.keys(report.pids).sort()).toEqual([String(sourcePid), String(targetPid)].sort());
  return report;
}
