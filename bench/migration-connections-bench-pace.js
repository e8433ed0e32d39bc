'use strict';
/**
 * The pacing of bench/migration-connections-bench.js, shared by its servers and clients: how often
 * each connection sends, and how a process spreads its writes over that interval.
 */

/** Writes per second each way over all connections that the default pace keeps (1,000 x 50/s). */
const DEFAULT_MESSAGES_PER_S = 50000;
/** The shortest interval per connection, and a process's timer tick. */
const MIN_PACE_MS = 20;

/**
 * The interval per connection for a row of `count` connections: MIN_PACE_MS up to 1,000, then
 * longer, so that the total message rate stays at `messagesPerS` (10,000 connections: 200 ms) and
 * the machine can keep it up. `override` (CONNECTIONS_BENCH_PACE_MS) fixes it for every row.
 */
function paceMsFor(count, { override, messagesPerS = DEFAULT_MESSAGES_PER_S } = {}) {
  if (override) return override;
  return Math.max(MIN_PACE_MS, Math.round((count * 1000) / messagesPerS));
}

/**
 * One timer per process: every tickMs it writes to one of `slots` slots of its connections
 * (connection i in slot i % slots), so each connection still sends every paceMs, and a process
 * with 10,000 connections does not write them all in one event-loop turn.
 */
function paceSlots(paceMs) {
  const tickMs = Math.min(paceMs, MIN_PACE_MS);
  return { tickMs, slots: Math.max(1, Math.round(paceMs / tickMs)) };
}

module.exports = { paceMsFor, paceSlots };
