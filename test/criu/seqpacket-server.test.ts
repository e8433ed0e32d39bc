/**
 * SeqpacketServer: a real AF_UNIX SOCK_SEQPACKET listener. Messages and fds both ways, only root
 * or our uid (or allowed uids) get a transport, the socket file's mode is set before listen,
 * close() is idempotent and removes the file, and no fd is left behind.
 */
import { execFile, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { SeqpacketServer, SeqpacketTransport } from '../../lib/transport';
import { readableCopy } from '../helpers/other-uid';
import { waitUntil } from '../helpers/wait';
import { newFds, openFds } from '../helpers/fds';

describe('SeqpacketServer', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ncr-sps-'));
    fs.chmodSync(dir, 0o755);
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('accepts our own connections; messages and fds pass both ways; close removes the file', async () => {
    const before = openFds();
    const socketPath = path.join(dir, 'agent.sock');
    const accepted: Array<{ transport: SeqpacketTransport; uid: number }> = [];
    const server = SeqpacketServer.listen({
      path: socketPath,
      onConnection: (transport, peer) => accepted.push({ transport, uid: peer.uid }),
    });
    expect(fs.statSync(socketPath).mode & 0o777).toBe(0o600);
    const client = SeqpacketTransport.connect(socketPath);
    await waitUntil(() => accepted.length === 1, { what: 'the connection accepted' });
    expect(accepted[0].uid).toBe(process.geteuid?.());
    const file = fs.openSync(path.join(dir, 'passed'), 'w');
    client.send(Buffer.from('hello'), [file]);
    fs.closeSync(file);
    const message = await accepted[0].transport.receive();
    expect(message.data.toString()).toBe('hello');
    expect(message.fds).toHaveLength(1);
    fs.writeSync(message.fds[0], 'via fd');
    fs.closeSync(message.fds[0]);
    expect(fs.readFileSync(path.join(dir, 'passed'), 'utf8')).toBe('via fd');
    accepted[0].transport.send(Buffer.from('back'));
    expect((await client.receive()).data.toString()).toBe('back');
    server.close();
    server.close();
    expect(fs.existsSync(socketPath)).toBe(false);
    // Accepted transports outlive the listener.
    client.send(Buffer.from('still'));
    expect((await accepted[0].transport.receive()).data.toString()).toBe('still');
    client.close();
    accepted[0].transport.close();
    expect(newFds(before)).toEqual([]);
  });

  test('another uid is closed unread unless allowed', async () => {
    const copy = readableCopy();
    try {
      const socketPath = path.join(dir, 'agent.sock');
      const refused: number[] = [];
      const accepted: number[] = [];
      let allow: number[] = [];
      const listen = (): SeqpacketServer =>
        SeqpacketServer.listen({
          path: socketPath,
          mode: 0o666,
          allowUids: allow,
          onConnection: (transport, peer) => {
            accepted.push(peer.uid);
            transport.close();
          },
          onRefused: (peer) => refused.push(peer.uid),
        });
      const connectAs65534 = (): Promise<string> =>
        new Promise((resolve) => {
          const script = `const { SeqpacketTransport } = require(${JSON.stringify(copy.at('dist'))});
            const t = SeqpacketTransport.connect(${JSON.stringify(socketPath)});
            t.receive().then(() => console.log('message'), (e) => console.log(e.code));`;
          execFile(
            'setpriv',
            ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '-e', script],
            (_e, out) => resolve(out.trim()),
          );
        });
      let server = listen();
      expect(fs.statSync(socketPath).mode & 0o777).toBe(0o666);
      expect(await connectAs65534()).toBe('ERR_TRANSPORT_DISCONNECTED');
      expect(refused).toEqual([65534]);
      expect(accepted).toEqual([]);
      server.close();
      allow = [65534];
      server = listen();
      expect(await connectAs65534()).toBe('ERR_TRANSPORT_DISCONNECTED');
      expect(accepted).toEqual([65534]);
      server.close();
    } finally {
      copy.dispose();
    }
  });

  test('out of fds, the listener reports EMFILE and closes instead of spinning', async () => {
    const socketPath = path.join(dir, 'full.sock');
    const dist = path.join(__dirname, '..', '..', 'dist');
    // A child with few fds: it fills its table, then a connection arrives that accept4 cannot take.
    const script = `
      const fs = require('fs');
      const { SeqpacketServer } = require(${JSON.stringify(dist)});
      const server = SeqpacketServer.listen({ path: ${JSON.stringify(socketPath)}, onConnection: () => {},
        onError: (e) => { console.log(e.code + ' ' + fs.existsSync(${JSON.stringify(socketPath)})); process.exit(0); } });
      const held = [];
      try { for (;;) held.push(fs.openSync('/dev/null', 'r')); } catch {}
      console.log('full');`;
    const child = spawn('prlimit', ['--nofile=64:64', process.execPath, '-e', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    await waitUntil(() => out.includes('full'), { what: 'the child out of fds' });
    const client = SeqpacketTransport.connect(socketPath);
    await new Promise((resolve) => child.once('exit', resolve));
    client.close();
    expect(out.trim().split('\n').pop()).toBe('EMFILE false');
  });

  test('bad arguments are typed errors and leave nothing behind', () => {
    const before = openFds();
    expect(() => SeqpacketServer.listen({ path: 'relative.sock', onConnection: () => undefined })).toThrow(
      expect.objectContaining({ code: expect.stringMatching(/^ERR_/) }),
    );
    expect(() =>
      SeqpacketServer.listen({ path: path.join(dir, 'x.sock'), mode: 0o1777, onConnection: () => undefined }),
    ).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    fs.writeFileSync(path.join(dir, 'taken'), '');
    expect(() => SeqpacketServer.listen({ path: path.join(dir, 'taken'), onConnection: () => undefined })).toThrow(
      expect.objectContaining({ code: 'EADDRINUSE' }),
    );
    expect(fs.existsSync(path.join(dir, 'taken'))).toBe(true);
    expect(newFds(before)).toEqual([]);
  });
});
