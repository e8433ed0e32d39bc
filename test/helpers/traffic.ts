/** Assertions over two TrafficEndpoints (or their reports from child processes). */
import type { TrafficReport } from '../fixtures/traffic';

export { PatternStream, Tally, TrafficEndpoint, waitFor } from '../fixtures/traffic';
export type { TrafficReport, TallySummary } from '../fixtures/traffic';

/**
 * Proves a connection between `a` and `b` carried every byte exactly once in both directions
 * (equal counts and SHA-256s, each side's sent against the other's received), that each side sent
 * what it was meant to, and that neither side saw a reset.
 */
export function expectExactTwoWay(a: TrafficReport, b: TrafficReport, expected: { aToB: number; bToA: number }): void {
  expect(a.sent.bytes).toBe(expected.aToB);
  expect(b.sent.bytes).toBe(expected.bToA);
  expect(b.received).toEqual(a.sent);
  expect(a.received).toEqual(b.sent);
  expect(a.resets).toBe(0);
  expect(b.resets).toBe(0);
  expect(a.errors).toEqual([]);
  expect(b.errors).toEqual([]);
}

/**
 * expectExactTwoWay for every connection of a many-connection run (the process-migration
 * fixtures' reports, keyed by client port): both sides report the same `connections` ports and
 * each moved `total` bytes each way, exactly.
 */
export function expectEveryConnectionExact(
  clients: { reports: Record<string, TrafficReport> },
  server: { reports: Record<string, TrafficReport> },
  stream: { connections: number; total: number },
): void {
  const ports = Object.keys(clients.reports).sort();
  expect(ports).toHaveLength(stream.connections);
  expect(Object.keys(server.reports).sort()).toEqual(ports);
  for (const port of ports)
    expectExactTwoWay(clients.reports[port], server.reports[port], { aToB: stream.total, bToA: stream.total });
}
