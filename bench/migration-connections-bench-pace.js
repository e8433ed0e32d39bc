'use strict';
/**
 * The pacing of bench/migration-connections-bench.js, shared by its servers and clients: how often
 * each connection sends, and how a process spreads its writes over that interval.
 */

/**
 * Above FIXED_PACE_UP_TO connections: messages per second each way over all connections (what
 * two CPUs shared with other work kept up with at 10,000 connections).
 */
const DEFAULT_MESSAGES_PER_S = 20000;
/** The interval per connection up to FIXED_PACE_UP_TO connections, and a process's timer tick. */
const MIN_PACE_MS = 20;
const FIXED_PACE_UP_TO = 1000;

/**
 * The interval per connection for a row of `count` connections: MIN_PACE_MS up to 1,000; above,
 * long enough that the total stays at `messagesPerS` (default 20,000/s: 10,000 connections at
 * 500 ms), a load the machine keeps up with. `override` (CONNECTIONS_BENCH_PACE_MS) fixes it for
 * every row.
 */
function paceMsFor(count, { override, messagesPerS = DEFAULT_MESSAGES_PER_S } = {}) {
  if (override) return override;
  if (count <= FIXED_PACE_UP_TO) return MIN_PACE_MS;
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

/**
 * Calls writeSlot(slot, slots) for every tick that is due, from one timer: a loop that ran late
 * (a timer fires once per turn, however long the turn) catches up instead of falling behind the
 * pace, but writes each slot at most once per call.
 */
function startPacer(paceMs, writeSlot) {
  const { tickMs, slots } = paceSlots(paceMs);
  const started = performance.now();
  let done = 0;
  return setInterval(() => {
    const due = Math.floor((performance.now() - started) / tickMs) + 1;
    done = Math.max(done, due - slots);
    for (; done < due; done++) writeSlot(done % slots, slots);
  }, tickMs);
}

module.exports = { paceMsFor, paceSlots, startPacer };
