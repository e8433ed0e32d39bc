/** The WebSocket state codec (lib/ws/state.ts): round trip, and malformed input refused with ERR_WS_STATE. */
import fc from 'fast-check';

import { WebSocketHandoverError } from '../../../lib/ws/errors';
import { decodeWebSocketState, encodeWebSocketState } from '../../../lib/ws/state';
import type { WebSocketMeta } from '../../../lib/ws/state';

const meta: WebSocketMeta = {
  index: 4,
  protocol: 'chat.v2',
  binaryType: 'arraybuffer',
  paused: true,
  deflate: { server_no_context_takeover: true, client_no_context_takeover: true, client_max_window_bits: 15 },
};

it('round-trips meta, application state and unparsed input', () => {
  const bytes = encodeWebSocketState(meta, Buffer.from('app'), Buffer.from([0x81, 0x85]));
  const carried = decodeWebSocketState(bytes);
  expect(carried.meta).toEqual(meta);
  expect(carried.appState.toString()).toBe('app');
  expect([...carried.head]).toEqual([0x81, 0x85]);
});

const refused = (bytes: Buffer): void => {
  expect(() => decodeWebSocketState(bytes)).toThrow(expect.objectContaining({ code: 'ERR_WS_STATE' }));
};
const withMeta = (m: Record<string, unknown>): Buffer =>
  encodeWebSocketState(m as unknown as WebSocketMeta, Buffer.alloc(0), Buffer.alloc(0));

it('refuses what it did not write', () => {
  refused(Buffer.from('NCWS\x02\0\0\0\0\0\0\0\0'));
  refused(Buffer.alloc(3));
  const huge = encodeWebSocketState(meta, Buffer.alloc(0), Buffer.alloc(0));
  huge.writeUInt32BE(0xffffffff, 5);
  refused(huge);
  const appTooLong = encodeWebSocketState(meta, Buffer.from('app'), Buffer.alloc(0));
  appTooLong.writeUInt32BE(1000, appTooLong.length - 7);
  refused(appTooLong);
  refused(withMeta({ ...meta, protocol: 'a b' }));
  refused(withMeta({ ...meta, protocol: 'x'.repeat(256) }));
  refused(withMeta({ ...meta, binaryType: 'string' }));
  refused(withMeta({ ...meta, index: -1 }));
  refused(withMeta({ ...meta, paused: 'no' }));
  refused(withMeta({ ...meta, deflate: { server_no_context_takeover: true } }));
  refused(withMeta({ ...meta, deflate: { ...meta.deflate, server_max_window_bits: 16 } }));
  refused(withMeta({ ...meta, deflate: { ...meta.deflate, other: true } }));
});

it('throws only ERR_WS_STATE for any bytes', () => {
  const valid = encodeWebSocketState(meta, Buffer.from('app'), Buffer.from('head'));
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 200 }), fc.integer({ min: 0, max: valid.length }), (noise, at) => {
      for (const bytes of [Buffer.from(noise), Buffer.concat([valid.subarray(0, at), Buffer.from(noise)])]) {
        try {
          decodeWebSocketState(bytes);
        } catch (error) {
          expect(error).toBeInstanceOf(WebSocketHandoverError);
          expect((error as WebSocketHandoverError).code).toBe('ERR_WS_STATE');
        }
      }
    }),
  );
});
