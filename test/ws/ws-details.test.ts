/**
 * What a handed-over WebSocket keeps, in one process (source and target WebSocketServers joined by
 * a SEQPACKET pair, method 'fd'): a message whose first fragment arrived before the handover and
 * its last after it arrives whole on the target; the subprotocol, binaryType and the application's
 * paused state come along; what the application sends within serializeState reaches the client;
 * 'connection' says it is a handed-over client and carries the state; on
 * the source the WebSocket is CLOSED without a close event, out of `clients`, and sending on it
 * meanwhile throws ERR_WS_HANDOVER_IN_PROGRESS. No fd is left behind.
 */
import * as http from 'node:http';
import type * as net from 'node:net';

import { WebSocket, WebSocketServer } from 'ws';

import { SeqpacketTransport } from '../../lib';
import { acceptWebSocketHandover, handOverWebSockets } from '../../lib/ws';
import type { HandoverConnectionInfo, HandedOverRequest } from '../../lib/ws';
import { newFds, openFds } from '../criu/helpers';
import { waitUntil } from '../helpers/wait';

it('carries a half-received fragmented message, the protocol, binaryType, paused state and app state', async () => {
  const fds = openFds();
  const httpServer = http.createServer();
  const source = new WebSocketServer({ server: httpServer });
  const target = new WebSocketServer({ noServer: true });
  const sourceEvents: string[] = [];
  source.on('connection', (ws) => {
    ws.binaryType = 'arraybuffer';
    ws.on('message', (data) => sourceEvents.push(`message ${String(Buffer.from(data as ArrayBuffer))}`));
    ws.on('close', () => sourceEvents.push('close'));
  });
  const arrived: Array<{ ws: WebSocket; request: HandedOverRequest; info: HandoverConnectionInfo }> = [];
  const targetMessages: unknown[] = [];
  target.on('connection', (ws: WebSocket, request: HandedOverRequest, info: HandoverConnectionInfo) => {
    arrived.push({ ws, request, info });
    ws.on('message', (data, isBinary) =>
      targetMessages.push([data instanceof ArrayBuffer, isBinary, String(Buffer.from(data as ArrayBuffer))]),
    );
  });
  await new Promise<void>((resolve) => httpServer.listen(0, '127.0.0.1', resolve));
  const client = new WebSocket(`ws://127.0.0.1:${(httpServer.address() as net.AddressInfo).port}`, ['v2.chat', 'chat']);
  const clientEvents: string[] = [];
  client.on('message', (data) => clientEvents.push(String(data)));
  client.on('close', () => clientEvents.push('close'));
  client.on('error', (error) => clientEvents.push(`error ${error.message}`));
  const { transport, peerFd } = SeqpacketTransport.pair('handover');
  try {
    await new Promise((resolve, reject) => client.once('open', resolve).once('error', reject));
    client.send('whole');
    client.send(Buffer.from('first half, '), { binary: true, fin: false });
    await waitUntil(() => sourceEvents.length === 1, { what: 'the first message on the source' });
    const [moving] = source.clients;
    moving.pause();

    const accepted = acceptWebSocketHandover(target, { from: new SeqpacketTransport(peerFd, 'handover') });
    let sendDuringHandover: unknown;
    const result = await handOverWebSockets(source, {
      to: transport,
      method: 'fd',
      serializeState: (ws) => {
        // Still ours during this call (it is flushed to the client); from here on it is not.
        ws.send('last from the source');
        setImmediate(() => {
          try {
            ws.send('too late');
          } catch (error) {
            sendDuringHandover = error;
          }
        });
        return Buffer.from('app state');
      },
    });
    expect(sendDuringHandover).toMatchObject({ code: 'ERR_WS_HANDOVER_IN_PROGRESS' });
    expect(result).toMatchObject({ handedOver: 1, resumed: 0, lost: 0, handedOverClients: [moving] });
    expect(await accepted).toMatchObject({ accepted: 1, failures: [] });
    expect(moving.readyState).toBe(WebSocket.CLOSED);
    expect(source.clients.size).toBe(0);

    const [{ ws, request, info }] = arrived;
    expect(request).toMatchObject({ handedOver: true, method: 'GET' });
    expect(info).toMatchObject({ handedOver: true });
    expect(info.state.toString()).toBe('app state');
    expect(target.clients.has(ws)).toBe(true);
    expect([ws.protocol, ws.binaryType, ws.isPaused]).toEqual(['v2.chat', 'arraybuffer', true]);

    client.send(Buffer.from('second half'), { binary: true, fin: true });
    client.send('after');
    ws.send('from the target');
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(targetMessages).toEqual([]); // paused: nothing is read
    ws.resume();
    await waitUntil(() => targetMessages.length === 2 && clientEvents.length === 2, { what: 'the messages' });
    expect(targetMessages).toEqual([
      [true, true, 'first half, second half'],
      [false, false, 'after'], // text is a Buffer whatever binaryType says
    ]);
    expect(clientEvents).toEqual(['last from the source', 'from the target']);
    expect(sourceEvents).toEqual(['message whole']);

    client.close();
    await waitUntil(() => target.clients.size === 0, { what: 'the close on the target' });
    expect(clientEvents).toEqual(['last from the source', 'from the target', 'close']);
  } finally {
    client.terminate();
    transport.close();
    target.close();
    source.close();
    await new Promise((resolve) => httpServer.close(resolve));
  }
  await waitUntil(() => newFds(fds).length === 0, { what: 'no fd left', timeoutMs: 5000 }).catch(() => undefined);
  expect(newFds(fds)).toEqual([]);
});
