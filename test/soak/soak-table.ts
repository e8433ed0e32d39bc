/** The soak's printed report: a markdown table with machine and date lines (scripts/soak.js). */
import * as os from 'node:os';

import type { ConnectionSoakResult } from './connection-soak';
import type { ServerSoakResult } from './server-soak';

export type SoakResult = ConnectionSoakResult | ServerSoakResult;

/** Nearest-rank percentile (p in 0..100); 0 for no values. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.max(0, Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1))];
}

export function soakPassed(result: SoakResult): boolean {
  return result.failures.length === 0;
}

const mb = (bytes: number): string => `${(bytes / 1e6).toFixed(1)} MB`;
const ms = (v: number): string => (v >= 100 ? v.toFixed(0) : v.toFixed(1));

function row(result: SoakResult): string {
  const pauses = `${ms(percentile(result.pausesMs, 50))} / ${ms(percentile(result.pausesMs, 99))} (max ${ms(Math.max(0, ...result.pausesMs))})`;
  const verdict = soakPassed(result) ? 'pass' : 'FAIL';
  const seconds = `${(result.durationMs / 1000).toFixed(1)} s`;
  if (result.kind === 'connection') {
    return [
      'one connection, full speed both ways: checkpointConnection + restoreConnection',
      `${result.cyclesDone}/${result.cycles} cycles (${result.crossNetnsMoves} into the other netns)`,
      '1',
      `${mb(result.toPeer.sent)} sent / ${mb(result.toPeer.received)} received`,
      `${mb(result.fromPeer.sent)} sent / ${mb(result.fromPeer.received)} received`,
      `${Number(result.toPeer.exact) + Number(result.fromPeer.exact)}/2 directions`,
      `${result.rstPackets} (OutRsts ${result.outRsts}, reset errors ${result.resetErrors})`,
      seconds,
      pauses,
      verdict,
    ].join(' | ');
  }
  return [
    'server migrated back and forth: migrateProcess (CRIU), S ⇄ T',
    `${result.movesDone}/${result.moves} moves`,
    String(result.connections),
    `${mb(result.clientToServer.sent)} sent / ${mb(result.clientToServer.received)} received`,
    `${mb(result.serverToClient.sent)} sent / ${mb(result.serverToClient.received)} received`,
    `${result.exactConnections}/${result.connections} connections`,
    `${result.rstPackets} (EstabResets ${result.clientEstabResets}, reset errors ${result.resetErrors})`,
    seconds,
    `${pauses}; longest client gap ${ms(result.maxClientGapMs)}`,
    verdict,
  ].join(' | ');
}

/** The whole report, one line per array element. */
export function soakReport(results: readonly SoakResult[], started: Date): string[] {
  const lines = [
    `Machine: ${os.cpus().length} x ${os.cpus()[0]?.model ?? 'cpu'}, Linux ${os.release()}, node ${process.version}; load average ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
    `Date: ${started.toISOString()} to ${new Date().toISOString()}`,
    '',
    '| soak | cycles | connections | bytes, moving side → peer (client → server) | bytes, peer → moving side (server → client) | SHA-256 exact both ways | RSTs | time | pause per move p50 / p99 ms | result |',
    '| --- | --- | ---: | --- | --- | --- | --- | ---: | --- | --- |',
    ...results.map((r) => `| ${row(r)} |`),
  ];
  for (const r of results) for (const failure of r.failures) lines.push(`- ${r.kind} soak failure: ${failure}`);
  return lines;
}
