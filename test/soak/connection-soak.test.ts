/**
 * Short version of the connection soak (`npm run soak` runs 1,000 cycles): one connection
 * streaming at full speed both ways, checkpointed and restored 50 times in a row, every 10th
 * restore into the other network namespace (see connection-soak.ts).
 */
import { runConnectionSoak } from './connection-soak';

it('50 checkpoint/restore cycles of a full-speed two-way stream: every byte exactly once both ways, no RST', async () => {
  const result = await runConnectionSoak({ cycles: 50, netnsEvery: 10 });
  expect(result.failures).toEqual([]);
  expect(result.cyclesDone).toBe(50);
  expect(result.crossNetnsMoves).toBe(5);
  expect(result.pausesMs).toHaveLength(50);
  // Both directions carried data through every cycle (at least progressBytes per cycle) and
  // arrived complete: same count and SHA-256 on both ends.
  expect(result.toPeer.sent).toBeGreaterThanOrEqual(50 * 64 * 1024);
  expect(result.fromPeer.sent).toBeGreaterThanOrEqual(50 * 64 * 1024);
  expect(result.toPeer).toEqual({ sent: result.toPeer.sent, received: result.toPeer.sent, exact: true });
  expect(result.fromPeer).toEqual({ sent: result.fromPeer.sent, received: result.fromPeer.sent, exact: true });
  expect(result.rstPackets).toBe(0);
  expect(result.outRsts).toBe(0);
  expect(result.resetErrors).toBe(0);
}, 180000);
