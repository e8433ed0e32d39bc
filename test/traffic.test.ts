/** The verifier itself must be able to fail: a dropped, duplicated or altered byte is caught. */
import * as net from 'node:net';

import { PatternStream, TrafficEndpoint, expectExactTwoWay } from './helpers/traffic';

describe('traffic verifier', () => {
  it('yields the same stream whatever the chunking', () => {
    const whole = new PatternStream(7).next(10000);
    const pieces = new PatternStream(7);
    const joined = Buffer.concat([pieces.next(1), pieces.next(4095), pieces.next(5904)]);
    expect(joined.equals(whole)).toBe(true);
    expect(new PatternStream(8).next(10000).equals(whole)).toBe(false);
  });

  it('passes an intact loopback connection and fails on a lost or duplicated byte', async () => {
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as net.AddressInfo).port;
    const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
    const clientSocket = net.connect(port, '127.0.0.1');
    const serverSocket = await accepted;
    const a = new TrafficEndpoint({ seed: 1, total: 300000 }).attach(clientSocket);
    const b = new TrafficEndpoint({ seed: 2, total: 200000 }).attach(serverSocket);
    try {
      await Promise.all([a.waitForReceived(200000), b.waitForReceived(300000)]);
      expectExactTwoWay(a.report(), b.report(), { aToB: 300000, bToA: 200000 });

      const lost = b.report();
      lost.received = { ...lost.received, bytes: lost.received.bytes - 1 };
      expect(() => expectExactTwoWay(a.report(), lost, { aToB: 300000, bToA: 200000 })).toThrow();

      const corrupted = a.report();
      corrupted.received = { ...corrupted.received, sha256: '0'.repeat(64) };
      expect(() => expectExactTwoWay(corrupted, b.report(), { aToB: 300000, bToA: 200000 })).toThrow();

      const reset = a.report();
      reset.resets = 1;
      expect(() => expectExactTwoWay(reset, b.report(), { aToB: 300000, bToA: 200000 })).toThrow();
    } finally {
      clientSocket.destroy();
      serverSocket.destroy();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
