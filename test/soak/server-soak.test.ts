/**
 * Short version of the server soak (`npm run soak` runs 1,000 connections x 20 moves): a server
 * with 100 streaming connections migrated 4 times back and forth between two network namespaces
 * with migrateProcess (CRIU), see server-soak.ts.
 */
import { runServerSoak } from './server-soak';

it('100 connections, 4 moves S -> T -> S -> T -> S: every connection kept, exact both ways, no RST', async () => {
  const result = await runServerSoak({ connections: 100, moves: 4 });
  expect(result.failures).toEqual([]);
  expect(result.movesDone).toBe(4);
  expect(result.pausesMs).toHaveLength(4);
  expect(result.exactConnections).toBe(100);
  expect(result.clientToServer.sent).toBeGreaterThan(0);
  expect(result.serverToClient.sent).toBeGreaterThan(0);
  expect(result.clientToServer.received).toBe(result.clientToServer.sent);
  expect(result.serverToClient.received).toBe(result.serverToClient.sent);
  expect(result.rstPackets).toBe(0);
  expect(result.clientEstabResets).toBe(0);
  expect(result.resetErrors).toBe(0);
}, 180000);
