/**
 * What goes with each WebSocket as its connection's state (handOverConnections' per-connection
 * state): 'NCWS' 1 | u32 meta length | meta (JSON) | u32 app length | the application's state |
 * the Receiver's unparsed input (frames.ts). The target checks every field (network input).
 */
import { WebSocketHandoverError } from './errors';

const MAGIC = Buffer.from('NCWS\x01', 'latin1');
const MAX_META = 4096;
const BINARY_TYPES = ['nodebuffer', 'arraybuffer', 'fragments', 'blob'] as const;
/** RFC 6455 token characters (what ws accepts as a subprotocol). */
const TOKEN = /^[!#$%&'*+\-.0-9A-Z^_`|a-z~]+$/;
const DEFLATE_KEYS = new Set([
  'server_no_context_takeover',
  'client_no_context_takeover',
  'server_max_window_bits',
  'client_max_window_bits',
]);

export interface WebSocketMeta {
  /** Position in the source's list (for the source's own bookkeeping). */
  index: number;
  /** Negotiated subprotocol ('' for none). */
  protocol: string;
  /** Negotiated permessage-deflate parameters (both no_context_takeover), when compression is on. */
  deflate?: Record<string, boolean | number>;
  binaryType: (typeof BINARY_TYPES)[number];
  /** The application had paused the WebSocket (ws.pause()). */
  paused: boolean;
}

export interface CarriedWebSocket {
  meta: WebSocketMeta;
  appState: Buffer;
  head: Buffer;
}

export function encodeWebSocketState(meta: WebSocketMeta, appState: Uint8Array, head: Buffer): Buffer {
  const json = Buffer.from(JSON.stringify(meta));
  const lengths = Buffer.alloc(8);
  lengths.writeUInt32BE(json.length, 0);
  lengths.writeUInt32BE(appState.length, 4);
  return Buffer.concat([MAGIC, lengths.subarray(0, 4), json, lengths.subarray(4), appState, head]);
}

function stateError(what: string): WebSocketHandoverError {
  return new WebSocketHandoverError(`malformed WebSocket state: ${what}`, 'ERR_WS_STATE');
}

function checkDeflate(value: unknown): Record<string, boolean | number> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw stateError('deflate');
  const params = value as Record<string, unknown>;
  for (const [key, v] of Object.entries(params)) {
    if (!DEFLATE_KEYS.has(key)) throw stateError(`deflate parameter ${key}`);
    if (key.endsWith('_bits') ? !(Number.isInteger(v) && (v as number) >= 8 && (v as number) <= 15) : v !== true)
      throw stateError(`deflate parameter ${key}`);
  }
  if (params.server_no_context_takeover !== true || params.client_no_context_takeover !== true)
    throw stateError('deflate without no_context_takeover on both sides');
  return params as Record<string, boolean | number>;
}

export function decodeWebSocketState(bytes: Buffer): CarriedWebSocket {
  if (bytes.length < MAGIC.length + 8 || !bytes.subarray(0, MAGIC.length).equals(MAGIC))
    throw stateError('not a node-criu WebSocket state (version 1)');
  let at = MAGIC.length;
  const metaLength = bytes.readUInt32BE(at);
  at += 4;
  if (metaLength > MAX_META || at + metaLength + 4 > bytes.length) throw stateError('meta length');
  let parsed: unknown;
  try {
    parsed = JSON.parse(bytes.subarray(at, at + metaLength).toString('utf8'));
  } catch {
    throw stateError('meta is not JSON');
  }
  at += metaLength;
  const appLength = bytes.readUInt32BE(at);
  at += 4;
  if (at + appLength > bytes.length) throw stateError('application state length');
  if (typeof parsed !== 'object' || parsed === null) throw stateError('meta');
  const m = parsed as Record<string, unknown>;
  if (!Number.isSafeInteger(m.index) || (m.index as number) < 0) throw stateError('index');
  if (typeof m.protocol !== 'string' || (m.protocol !== '' && (m.protocol.length > 255 || !TOKEN.test(m.protocol))))
    throw stateError('protocol');
  if (!BINARY_TYPES.includes(m.binaryType as WebSocketMeta['binaryType'])) throw stateError('binaryType');
  if (typeof m.paused !== 'boolean') throw stateError('paused');
  const meta: WebSocketMeta = {
    index: m.index as number,
    protocol: m.protocol,
    binaryType: m.binaryType as WebSocketMeta['binaryType'],
    paused: m.paused,
    ...(m.deflate === undefined ? {} : { deflate: checkDeflate(m.deflate) }),
  };
  return { meta, appState: bytes.subarray(at, at + appLength), head: bytes.subarray(at + appLength) };
}
