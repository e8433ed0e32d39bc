/**
 * Connections-only migration: a server process hands its live TCP connections, with the
 * application's own state for each, to another server process, which takes them over; the first
 * then exits (or keeps running if the handover failed: nothing is lost either way).
 *
 *   source:  await handOverConnections(sockets, { to, serializeState, onResumed, moveAddress })
 *   target:  await acceptHandover({ from: { listen: { port } }, onConnection(socket, state) {...} })
 *
 * Which method fits when:
 *   method 'fd' (SCM_RIGHTS over a unix SEQPACKET socket): same host only; the kernel socket itself
 *     changes owner, so there is no repair mode, no lock and no copy of the queues: the cheapest
 *     handover (an upgrade or restart of the server in place). The socket stays in the namespace
 *     it was created in.
 *   method 'repair' (libsoccr TCP_REPAIR images): any host or namespace that owns the connection's
 *     local address when it restores; the connection is re-created from its image. Costs a
 *     checkpoint and restore per connection, plus the lock:
 *       lock 'filter' with moveAddress: the originals stay paused behind a per-socket drop filter
 *         until the target confirms (the source can resume them as they were); the target drops
 *         the staged 4-tuples with nftables between the address arriving and each restore.
 *       lock 'nftables' (target in the same namespace): the originals are closed at checkpoint
 *         (the 4-tuple must be free for the restore), their packets dropped by nftables until the
 *         target restores them; on failure the source restores the images itself.
 *
 * What is not handed over: the listening socket, and with it any connection still in its accept
 * queue (established by the kernel, not yet accepted by the application). Node's net.Server does
 * not list its connections either: the application passes the sockets it holds. So stop accepting
 * (or wait until everything queued is accepted) before handing over; close the listener once the
 * handover starts, and let the target listen when it is done. A SYN that reaches the source after
 * its listener closed is answered with RST (the client may retry); CRIU's whole-process route
 * carries the listener too.
 */
export { handOverConnections } from './handover-source';
export type {
  HandOverOptions,
  HandOverResult,
  HandoverMethod,
  HandoverPhases,
  HandoverProgress,
} from './handover-source';
export { acceptHandover } from './handover-target';
export type { AcceptHandoverOptions, AcceptHandoverResult, HandoverHello } from './handover-target';
export { serveHandover, readHello } from './handover-session';
export type { AllowList, SessionOptions, TargetLimits } from './handover-session';
export { channelOver } from './handover-connect';
export type { HandoverChannelSpec } from './handover-connect';
export type { HandoverChannel } from './handover-channel';
export { HANDOVER_PROTOCOL_VERSION } from './handover-messages';
export { HandoverError } from './handover-errors';
