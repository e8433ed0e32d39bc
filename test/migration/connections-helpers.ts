/** Shared setup of the connections-handover tests: server/client fixture processes in namespaces. */
import { spawn } from 'node:child_process';
import * as path from 'node:path';

import { binding } from '../../lib/native';
import { Child } from '../helpers/soccr';
import type { NetnsLab } from '../helpers/netns';
import type { TrafficReport } from '../helpers/traffic';
import { expectExactTwoWay, waitFor } from '../helpers/traffic';
import { waitUntil } from '../helpers/wait';

/**
 * Two namespaces of `lab` joined by a veth: H (the servers) at `<subnet>.1` and C (the clients) at
 * `<subnet>.2`, both /24.
 */
export function serverAndClientNetns(lab: NetnsLab, subnet: string): { H: string; C: string } {
  const H = lab.add('h');
  const C = lab.add('c');
  lab.ip(H, ['link', 'add', 'vh', 'type', 'veth', 'peer', 'name', 'vc', 'netns', C]);
  lab.ip(H, ['addr', 'add', `${subnet}.1/24`, 'dev', 'vh']);
  lab.ip(H, ['link', 'set', 'vh', 'up']);
  lab.ip(C, ['addr', 'add', `${subnet}.2/24`, 'dev', 'vc']);
  lab.ip(C, ['link', 'set', 'vc', 'up']);
  return { H, C };
}

export const SERVER_FIXTURE = path.join(__dirname, '..', 'fixtures', 'migration-server.js');
export const CLIENTS_FIXTURE = path.join(__dirname, '..', 'fixtures', 'migration-clients.js');

export interface PortReport {
  port: number;
  ended: boolean;
  closed?: boolean;
  report: TrafficReport;
}

export type Event = { event: string; [key: string]: unknown };

/** A fixture child in `ns`, optionally inheriting `channelFd` as its fd 4; collects events. */
export class FixtureProcess extends Child {
  readonly events: Event[] = [];
  private readonly listeners: Array<(e: Event) => void> = [];

  static start(lab: NetnsLab, ns: string, script: string, channelFd?: number): FixtureProcess {
    const stdio: Array<'ignore' | 'inherit' | 'ipc' | number> = ['ignore', 'inherit', 'inherit', 'ipc'];
    if (channelFd !== undefined) stdio.push(channelFd);
    const proc = spawn('nsenter', [`--net=${lab.path(ns)}`, '--', process.execPath, script], { stdio });
    const child = new FixtureProcess(proc);
    proc.on('message', (msg: Event) => {
      if (typeof msg.event !== 'string') return;
      child.events.push(msg);
      child.listeners.forEach((l) => l(msg));
    });
    return child;
  }

  onEvent(listener: (e: Event) => void): void {
    this.listeners.push(listener);
  }

  nextEvent(name: string, timeoutMs = 30000): Promise<Event> {
    const seen = this.events.find((e) => e.event === name);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${name} event after ${timeoutMs} ms`)), timeoutMs);
      this.onEvent((e) => {
        if (e.event === name) {
          clearTimeout(timer);
          resolve(e);
        }
      });
    });
  }

  async reports(): Promise<PortReport[]> {
    return (await this.request<{ reports: PortReport[] }>({ cmd: 'reports' })).reports;
  }
}

/**
 * Waits until the server application has accepted `count` connections: one still in the accept
 * queue when the handover starts is not the application's yet (it is not handed over).
 */
export async function waitForAccepted(server: FixtureProcess, count: number): Promise<void> {
  for (let i = 0; (await server.reports()).length < count; i++) {
    if (i > 300) throw new Error(`the server accepted fewer than ${count} connections`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Waits until each of the server's `count` connections has moved bytes both ways: the streams are going. */
export async function waitForTrafficFlowing(server: FixtureProcess, count: number): Promise<void> {
  let reports: PortReport[] = [];
  await waitUntil(
    async () => {
      reports = await server.reports();
      return reports.length >= count && reports.every((r) => r.report.sent.bytes > 0 && r.report.received.bytes > 0);
    },
    {
      timeoutMs: 30_000,
      what: `traffic both ways on ${count} connections`,
      detail: () => reports.map((r) => `${r.port}: ${r.report.sent.bytes}/${r.report.received.bytes}`).join(', '),
    },
  );
}

/** A connected SEQPACKET pair for two children (close both here once they are spawned). */
export function seqpacketPair(): [number, number] {
  return binding().seqpacketPair();
}

/**
 * Waits until every connection carried `total` bytes each way (or, for one the client ended,
 * everything sent before the end), merging the server side's reports from every server process.
 */
export async function waitForExactTraffic(
  clients: FixtureProcess,
  servers: FixtureProcess[],
  total: number,
  timeoutMs = 60000,
): Promise<{ clientReports: PortReport[]; serverReports: Map<number, PortReport> }> {
  let clientReports: PortReport[] = [];
  let serverReports = new Map<number, PortReport>();
  const done = () =>
    clientReports.length > 0 &&
    clientReports.every((c) => {
      const s = serverReports.get(c.port);
      if (!s) return false;
      if (c.ended)
        return (
          s.report.received.bytes === c.report.sent.bytes && c.report.received.bytes === s.report.sent.bytes && s.ended
        );
      return c.report.received.bytes >= total && s.report.received.bytes >= total;
    });
  const started = Date.now();
  while (Date.now() - started < timeoutMs) {
    clientReports = await clients.reports();
    serverReports = new Map();
    for (const server of servers) {
      if (server.process.exitCode !== null || server.process.signalCode !== null) continue;
      for (const r of await server.reports()) serverReports.set(r.port, r);
    }
    if (done()) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return { clientReports, serverReports };
}

/** Both directions byte-exact (counts and SHA-256) and no reset, for every connection. */
export function expectAllExact(
  clientReports: PortReport[],
  serverReports: Map<number, PortReport>,
  total: number,
  count: number,
): void {
  expect(clientReports).toHaveLength(count);
  for (const c of clientReports) {
    const s = serverReports.get(c.port);
    expect(s).toBeDefined();
    const server = (s as PortReport).report;
    if (c.ended) {
      expectExactTwoWay(c.report, server, { aToB: c.report.sent.bytes, bToA: server.sent.bytes });
    } else {
      expectExactTwoWay(c.report, server, { aToB: total, bToA: total });
    }
  }
}

export { waitFor };
