/**
 * What handOverServer and acceptServerHandover need to know of a net.Server or http.Server that
 * Node does not publish: which connections it owns, whether node:http's parser sits between two
 * requests, and how a connection enters a server as if it had been accepted. The Node internals
 * this relies on (net.Server's `_connections`, http.Server's connections list, a socket's
 * `parser` and `_httpMessage`) are used here only, each checked before use.
 */
import * as http from 'node:http';
import * as net from 'node:net';

import { soccr } from '../soccr';
import { HandoverError } from './handover-errors';

/** node:http's per-server list of parsers (lib/_http_server.js, kConnections). */
interface ConnectionsList {
  all(): Array<{ socket?: net.Socket | null }>;
  idle(): Array<{ socket?: net.Socket | null }>;
}

interface HttpSocket extends net.Socket {
  parser?: unknown;
  _httpMessage?: unknown;
}

interface ServerInternals {
  _connections: number;
  noDelay?: boolean;
  keepAlive?: boolean;
  keepAliveInitialDelay?: number;
}

const tracked = new WeakMap<net.Server, Set<net.Socket>>();

function internalsError(what: string): HandoverError {
  return new HandoverError(
    `this Node version's ${what} is not what node-criu knows (handOverServer needs it): use handOverConnections`,
    'ERR_HANDOVER_SERVER_INTERNALS',
  );
}

function connectionsList(server: http.Server): ConnectionsList | undefined {
  const symbol = Object.getOwnPropertySymbols(server).find((s) => s.description === 'http.server.connections');
  const list = symbol === undefined ? undefined : (server as unknown as Record<symbol, unknown>)[symbol];
  if (list === undefined) return undefined;
  const typed = list as ConnectionsList;
  if (typeof typed.all !== 'function' || typeof typed.idle !== 'function')
    throw internalsError('http connections list');
  return typed;
}

export function isHttpServer(server: net.Server): server is http.Server {
  return server instanceof http.Server;
}

/**
 * Remembers every connection the server accepts from now on (and those entered by
 * acceptServerHandover). Needed for a net.Server, which keeps no list; an http.Server's own list
 * misses connections that left HTTP (upgrades), which this one keeps. Idempotent.
 */
export function trackServerConnections(server: net.Server): void {
  if (tracked.has(server)) return;
  const sockets = new Set<net.Socket>();
  tracked.set(server, sockets);
  server.prependListener('connection', (socket: net.Socket) => remember(sockets, socket));
}

function remember(sockets: Set<net.Socket>, socket: net.Socket): void {
  if (socket.destroyed || sockets.has(socket)) return;
  sockets.add(socket);
  socket.once('close', () => sockets.delete(socket));
}

/** How many connections the server counts as its own (closed ones leave the count). */
export function connectionCount(server: net.Server): Promise<number> {
  return new Promise((resolve, reject) =>
    server.getConnections((error, count) => (error ? reject(error) : resolve(count))),
  );
}

/** Every open connection the server owns, as far as it can be known (see trackServerConnections). */
export function knownConnections(server: net.Server): net.Socket[] {
  const sockets = new Set<net.Socket>(tracked.get(server) ?? []);
  if (isHttpServer(server)) {
    for (const parser of connectionsList(server)?.all() ?? []) if (parser.socket) sockets.add(parser.socket);
  }
  return [...sockets].filter((socket) => !socket.destroyed);
}

/** An http.Server connection that is no longer HTTP (upgraded, e.g. to WebSocket). */
export function leftHttp(socket: net.Socket): boolean {
  return (socket as HttpSocket).parser == null;
}

/** Where each connection of an http.Server stands, read in one go (one list walk). */
export interface HttpSnapshot {
  /** The parser is between two messages: nothing of a next request has been read. */
  parserIdle(socket: net.Socket): boolean;
}

export function httpSnapshot(server: http.Server): HttpSnapshot {
  const list = connectionsList(server);
  if (list === undefined) throw internalsError('http.Server (no connections list while listening)');
  const idle = new Set(list.idle().map((p) => p.socket));
  // A connection that never read a byte has an empty parser too (node lists it as active: it
  // starts the headers timeout at accept).
  return { parserIdle: (socket) => idle.has(socket) || socket.bytesRead === 0 };
}

/** A response of node:http is in progress or queued on this connection. */
export function responsePending(socket: net.Socket): boolean {
  return (socket as HttpSocket)._httpMessage != null;
}

/**
 * Makes node:http keep a list of the server's connections before it listens (it otherwise starts
 * one on 'listening'): connections entered before listen are then in it, for timeouts,
 * closeIdleConnections() and a later handover.
 */
export function startHttpConnectionsList(server: http.Server): void {
  if (connectionsList(server) !== undefined) return;
  const setup = server.listeners('listening').find((f) => f.name === 'setupConnectionsTracking');
  if (setup === undefined) throw internalsError('http.Server (no setupConnectionsTracking)');
  (setup as () => void).call(server);
}

/**
 * Hands a connection to the server as net.Server's accept would: its socket options, its place
 * in the server's connection count (close() waits for it), then 'connection' (node:http starts
 * parsing the next request on it).
 */
export function enterServer(server: net.Server, socket: net.Socket): void {
  const internals = server as unknown as ServerInternals;
  if (typeof internals._connections !== 'number') throw internalsError('net.Server');
  // Node's accepted sockets inherit SO_REUSEADDR from its listener; one restored from an image
  // lacks it, and the server's listen on the same port would then fail with EADDRINUSE.
  soccr.setReuseAddress(socket, true);
  if (internals.noDelay) socket.setNoDelay(true);
  if (internals.keepAlive) socket.setKeepAlive(true, internals.keepAliveInitialDelay ?? 0);
  internals._connections++;
  const owned = socket as net.Socket & { server?: net.Server; _server?: net.Server };
  owned.server = server;
  owned._server = server;
  const sockets = tracked.get(server);
  if (sockets) remember(sockets, socket);
  server.emit('connection', socket);
}

/**
 * Closes the listening socket only (net.Server's close): http.Server's close() would also close
 * idle keep-alive connections, the very ones being handed over.
 */
export function closeListener(server: net.Server): void {
  if (server.listening) net.Server.prototype.close.call(server);
}

/** The listening socket's fd (Node's), for /proc. */
export function listenerFd(server: net.Server): number {
  const fd = (server as unknown as { _handle?: { fd?: number } | null })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw internalsError('net.Server listening handle');
  return fd;
}
