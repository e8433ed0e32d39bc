'use strict';
/**
 * A line echo server (a separate process: CRIU moves whole processes) and a client that checks it.
 * The client sends a numbered line every `intervalMs` and expects each back once, in order.
 */
const fs = require('node:fs');
const net = require('node:net');
const readline = require('node:readline');
const { spawn } = require('node:child_process');

/**
 * Starts the echo server on 127.0.0.1:port in a session of its own, stdio on /dev/null; resolves
 * with its pid. CRIU restores a process with its pid, so a killed original must be reaped first:
 * `child` makes it our child (our event loop reaps it as soon as it dies); otherwise sh starts it in
 * the background and exits, as a server one dumps usually is not a child of the dumper, and it is
 * reaped by init.
 */
async function startEchoServer(port, readyFile, { child = false } = {}) {
  const argv = [process.execPath, __filename, 'serve', String(port), readyFile];
  const [command, args] = child ? [argv[0], argv.slice(1)] : ['sh', ['-c', '"$@" &', 'sh', 'setsid', ...argv]];
  const started = spawn(command, args, {
    detached: true,
    stdio: 'ignore',
    // libuv's io_uring rings are something CRIU 4.2 cannot dump.
    env: { ...process.env, UV_USE_IO_URING: '0' },
  });
  if (!child) await new Promise((resolve) => started.once('exit', resolve));
  for (let i = 0; i < 600 && !fs.existsSync(readyFile); i++) await new Promise((r) => setTimeout(r, 50));
  if (!fs.existsSync(readyFile)) throw new Error('the echo server did not start');
  return Number(fs.readFileSync(readyFile, 'utf8'));
}

/** Connects to 127.0.0.1:port and keeps sending numbered lines until stop(). */
async function startEchoClient(port, intervalMs = 10) {
  const socket = net.connect(port, '127.0.0.1');
  await new Promise((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  const state = { sent: 0, echoed: 0, wrong: 0, errors: [], closed: false };
  socket.on('error', (error) => state.errors.push(error.code ?? error.message));
  socket.on('close', () => (state.closed = true));
  readline.createInterface({ input: socket }).on('line', (line) => {
    if (Number(line) === state.echoed) state.echoed += 1;
    else state.wrong += 1;
  });
  const timer = setInterval(() => socket.write(`${state.sent++}\n`), intervalMs);
  return {
    state,
    /** Resolves once `count` more lines came back, or rejects after timeoutMs. */
    async echoes(count, timeoutMs = 30000) {
      const target = state.echoed + count;
      const started = Date.now();
      while (state.echoed < target) {
        if (Date.now() - started > timeoutMs || state.closed) throw new Error(`echoes stopped at ${state.echoed}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    },
    /** Stops sending, waits for every echo, closes; returns the tally. */
    async stop() {
      clearInterval(timer);
      await this.echoes(state.sent - state.echoed).catch(() => undefined);
      socket.end();
      return state;
    },
    /**
     * After the server was moved: 20 more echoes (from the moved server), then stop(); prints the
     * tally and 'ok' or 'FAILED', and returns the exit code.
     */
    async finish(what) {
      await this.echoes(20);
      await this.stop();
      const ok = state.echoed === state.sent && state.wrong === 0 && state.errors.length === 0;
      console.log(`the client got ${state.echoed}/${state.sent} lines back across ${what}`);
      console.log(ok ? 'ok' : `FAILED ${JSON.stringify(state)}`);
      return ok ? 0 : 1;
    },
  };
}

/** SIGKILL, if it still runs. */
function killQuietly(pid) {
  try {
    if (pid !== undefined) process.kill(pid, 'SIGKILL');
  } catch {
    // not running
  }
}

if (require.main === module && process.argv[2] === 'serve') {
  const [port, readyFile] = process.argv.slice(3);
  const server = net.createServer((socket) => socket.pipe(socket));
  server.listen(Number(port), '127.0.0.1', () => fs.writeFileSync(readyFile, String(process.pid)));
}

module.exports = { killQuietly, startEchoServer, startEchoClient };
