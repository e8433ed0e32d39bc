/**
 * Shared setup of the ws handover tests: the server fixture (test/fixtures/ws-server.js) in H, `ws`
 * clients (ws-clients.js) in C across a veth, and the checks every test makes: each WebSocket
 * message once, in order and exact both ways (sequence numbers, per-message comparison, CRC-32 of
 * each stream), the application's per-connection counter continuous, no close or error on any
 * client, no RST reaching C.
 */
import * as path from 'node:path';

import { RstCounter } from '../fixtures/fault-helpers';
import { FixtureProcess } from '../migration/connections-helpers';
import { NetnsLab } from '../helpers/netns';
import { waitUntil } from '../helpers/wait';

export const WS_SERVER = path.join(__dirname, '..', 'fixtures', 'ws-server.js');
export const WS_CLIENTS = path.join(__dirname, '..', 'fixtures', 'ws-clients.js');

export interface StreamState {
  seq: number;
  crc: number;
  bytes: number;
  bad?: string[];
}

export interface ClientReport {
  id: number;
  sent: StreamState;
  received: StreamState;
  closed: { code: number; reason: string } | null;
  errors: string[];
  protocol: string;
  extensions: string;
}

export interface ServerReport extends Omit<ClientReport, 'errors' | 'closed'> {
  app: { messages: number };
  handedOver: boolean;
  closed: boolean;
}

export class WsLab {
  readonly lab = new NetnsLab();
  readonly H: string;
  readonly C: string;
  private readonly rsts: RstCounter;
  private readonly started: FixtureProcess[] = [];

  constructor(readonly serverIp: string) {
    const prefix = serverIp.split('.').slice(0, 3).join('.');
    this.H = this.lab.add('h');
    this.C = this.lab.add('c');
    this.lab.ip(this.H, ['link', 'add', 'vh', 'type', 'veth', 'peer', 'name', 'vc', 'netns', this.C]);
    this.lab.ip(this.H, ['addr', 'add', `${serverIp}/24`, 'dev', 'vh']);
    this.lab.ip(this.H, ['link', 'set', 'vh', 'up']);
    this.lab.ip(this.C, ['addr', 'add', `${prefix}.2/24`, 'dev', 'vc']);
    this.lab.ip(this.C, ['link', 'set', 'vc', 'up']);
    this.rsts = RstCounter.incoming(this.lab.path(this.C));
  }

  start(ns: string, script: string, channelFd?: number): FixtureProcess {
    const child = FixtureProcess.start(this.lab, ns, script, channelFd);
    this.started.push(child);
    return child;
  }

  /** RSTs that reached C, and C's own TCP reset counters. */
  resets(): { inC: number; C: number } {
    const c = this.lab.tcpCounters(this.C);
    return { inC: this.rsts.counts().in, C: c.OutRsts + c.EstabResets };
  }

  async stopAll(): Promise<void> {
    await Promise.all(this.started.splice(0).map((p) => p.stop()));
  }

  destroy(): void {
    this.lab.destroy();
  }
}

export async function clientReports(clients: FixtureProcess): Promise<ClientReport[]> {
  return (await clients.request<{ reports: ClientReport[] }>({ cmd: 'reports' })).reports;
}

export async function serverReports(server: FixtureProcess): Promise<ServerReport[]> {
  return (await server.request<{ reports: ServerReport[] }>({ cmd: 'reports' })).reports;
}

/** Waits until every client got at least `count` messages from the server (the streams are going). */
export async function waitForMessages(clients: FixtureProcess, count: number, expected: number): Promise<void> {
  let reports: ClientReport[] = [];
  await waitUntil(
    async () => {
      reports = await clientReports(clients);
      return reports.length === expected && reports.every((r) => r.received.seq >= count && r.sent.seq >= count);
    },
    {
      timeoutMs: 60_000,
      what: `${count} messages each way`,
      detail: () => JSON.stringify(reports.map((r) => r.received.seq)),
    },
  );
}

/** Waits until both sides of every client finished `total` messages, then checks them all. */
export async function expectStreamsComplete(
  clients: FixtureProcess,
  server: FixtureProcess,
  count: number,
  total: number,
  expectations: { handedOver: boolean; protocol: string; extensions?: string },
): Promise<void> {
  let c: ClientReport[] = [];
  let s: ServerReport[] = [];
  await waitUntil(
    async () => {
      [c, s] = [await clientReports(clients), await serverReports(server)];
      return (
        c.length === count &&
        s.length === count &&
        c.every((r) => r.received.seq >= total && r.sent.seq >= total) &&
        s.every((r) => r.received.seq >= total && r.sent.seq >= total)
      );
    },
    {
      timeoutMs: 120_000,
      what: `${total} messages each way on ${count} WebSockets`,
      detail: () => JSON.stringify({ clients: c.map((r) => r.received.seq), server: s.map((r) => r.received.seq) }),
    },
  );
  const byId = new Map(s.map((r) => [r.id, r]));
  for (const client of c) {
    const srv = byId.get(client.id) as ServerReport;
    expect(srv).toBeDefined();
    // Once, in order, exact: every message matched its number; counts and checksums agree.
    expect({ id: client.id, bad: client.received.bad }).toEqual({ id: client.id, bad: [] });
    expect({ id: client.id, bad: srv.received.bad }).toEqual({ id: client.id, bad: [] });
    expect(client.received).toMatchObject({ seq: total, crc: srv.sent.crc, bytes: srv.sent.bytes });
    expect(srv.received).toMatchObject({ seq: total, crc: client.sent.crc, bytes: client.sent.bytes });
    expect(srv.sent.seq).toBe(total);
    // The application's own per-connection state went along: it counted every message once.
    expect(srv.app.messages).toBe(total);
    expect(srv).toMatchObject({ handedOver: expectations.handedOver, closed: false, protocol: expectations.protocol });
    expect(client).toMatchObject({ closed: null, errors: [], protocol: expectations.protocol });
    if (expectations.extensions !== undefined) {
      expect(srv.extensions).toBe(expectations.extensions);
      expect(client.extensions).toBe(expectations.extensions);
    }
  }
}
