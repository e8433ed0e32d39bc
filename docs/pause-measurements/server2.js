// Runs inside the SERVER netns. Accepts one connection, streams to the client and reads its stream,
// checkpoints the connection at T0 (default nftables lock), waits FREEZE ms, restores it in the same
// netns, keeps streaming. Prints one JSON line with results.
'use strict';
const net = require('net');
const { execSync, exec } = require('child_process');
const execP = (c) => new Promise((ok) => exec(c, (e, out) => ok(e ? 'ERR ' + e.message : out)));
const { checkpointConnection, restoreConnection } = require(require('node:path').join(__dirname, '..', '..', 'dist'));
const FREEZE = +process.env.FREEZE || 100;
process.env.TAIL_MS; const MODE = process.env.MODE || 'paced';     // 'paced' (1000 B / 10 ms) | 'bulk' (write as fast as possible)
const CLIENT_NS = process.env.CLIENT_NS;
// server2: the server's in-flight data at checkpoint time is LOST (dropped in the client netns from
// just before the checkpoint until just before the restore), and after the restore the server writes
// nothing new (QUIET), so only its own retransmission timer can resend the lost bytes.
const DROP_NFT = `ip netns exec ${CLIENT_NS} nft`;
function dropOn() { execSync(`${DROP_NFT} add table ip pmdrop`); execSync(`${DROP_NFT} 'add chain ip pmdrop in { type filter hook prerouting priority -400; policy accept; }'`); execSync(`${DROP_NFT} add rule ip pmdrop in ip saddr 10.77.0.2 tcp sport 5001 drop`); }
function dropOff() { execSync(`${DROP_NFT} delete table ip pmdrop`); }
const PORT = 5001;
const res = { freeze: FREEZE, mode: MODE, ss: {}, nstat: {} };
const NK = ['TcpExtTCPTimeouts','TcpExtTCPLossProbes','TcpRetransSegs','TcpExtTCPSpuriousRTOs','TcpExtTCPFastRetrans','TcpExtTCPSackRecovery','TcpExtTCPWinProbe','TcpOutRsts'];
async function nst(cmd) { const o = {}; try { for (const l of (await execP(cmd)).split('\n')) { const f = l.trim().split(/\s+/); if (NK.includes(f[0])) o[f[0]] = +f[1]; } } catch (e) { o.err = e.message; } return o; }
async function nstatSnap(tag) { const [a, b] = await Promise.all([nst('nstat -az'), nst(`ip netns exec ${CLIENT_NS} nstat -az`)]); res.nstat[tag] = { server: a, client: b }; }
let rxLast = 0, rxMaxGap = 0, rxMaxGapAt = 0, rxBytes = 0, tStart = 0;
const now = () => Number(process.hrtime.bigint() / 1000n) / 1000; // ms
function onData(d) { const t = now(); if (rxLast) { const g = t - rxLast; if (g > rxMaxGap) { rxMaxGap = g; rxMaxGapAt = t - tStart; } } rxLast = t; rxBytes += d.length; }
function ssSnap(tag) { // asynchronous: never blocks the event loop (the writer keeps running)
  execP(`ss -tinH state established '( sport = :${PORT} )'`).then(o => { res.ss[tag + '_server'] = o.trim(); });
  execP(`ip netns exec ${CLIENT_NS} ss -tinH state established '( dport = :${PORT} )'`).then(o => { res.ss[tag + '_client'] = o.trim(); });
}
const chunk = Buffer.alloc(MODE.startsWith('bulk') ? 65536 : 1000, 0x61);
let sock, writer, stopped = false;
function startWriting(s) {
  if (MODE === 'paced') { writer = setInterval(() => s.write(chunk), 10); return; }
  const pump = () => { if (stopped) return; while (s.write(chunk)) { if (stopped) return; } s.once('drain', pump); };
  pump();
}
function stopWriting() { stopped = true; if (writer) clearInterval(writer); }
const srv = net.createServer(async (s) => {
  sock = s; tStart = now(); s.on('data', onData); startWriting(s);
  await new Promise(r => setTimeout(r, 1200));
  await nstatSnap('beforeCkpt');
  await new Promise(r => setTimeout(r, Math.max(0, 1500 - (now() - tStart))));
  // checkpoint
  if (FREEZE < 0) { res.noCheckpoint = true; setTimeout(async () => { stopWriting(); await nstatSnap('end'); res.serverRx = { bytes: rxBytes, maxGapMs: +rxMaxGap.toFixed(1), maxGapAtMs: +rxMaxGapAt.toFixed(1) }; console.log(JSON.stringify(res)); process.exit(0); }, 3500); return; }
  stopWriting(); s.removeAllListeners('data');
  // bulkfull: one 8 MiB write right before the checkpoint; the checkpoint flushes Node's buffer into
  // the kernel first, so the kernel send queue is full (sent-unacked + unsent) when the lock goes on.
  if (MODE === 'bulkfull') s.write(Buffer.alloc(8 << 20, 0x63));
  dropOn(); res.dropOnAtMs = +(now() - tStart).toFixed(1);
  const t0 = now();
  const img = await checkpointConnection(s);
  const t1 = now();
  res.checkpointMs = +(t1 - t0).toFixed(2);
  res.img = { outqLen: img.skData.outqLen, unsqLen: img.skData.unsqLen, sentUnacked: img.skData.outqLen - img.skData.unsqLen, inqLen: img.skData.inqLen, pendingRead: img.pendingRead.length, lock: !!img.lock };
  await new Promise(r => setTimeout(r, FREEZE));
  dropOff();
  const t2 = now();
  const r = await restoreConnection(img);
  const t3 = now();
  res.restoreMs = +(t3 - t2).toFixed(2); res.pauseMs = +(t3 - t0).toFixed(2);
  res.restoredAtMs = +(t3 - tStart).toFixed(1);
  setImmediate(() => { ssSnap('t0'); nstatSnap('afterRestore'); });
  for (const ms of [100, 250, 500, 900, 1100, 1500, 2500, 3500, 4500, 6000]) setTimeout(() => { try { res.ss['srv_' + ms] = execSync(`ss -tinH state established '( sport = :${PORT} )'`).toString().trim().replace(/\s+/g, ' ').match(/(rto:\S+|rtt:\S+|unacked:\S+|retrans:\S+|lost:\S+|bytes_retrans:\S+|cwnd:\S+|backoff:\S+)/g).join(' '); } catch (e) {} }, ms);
  setTimeout(() => ssSnap('t300'), 300);
  setTimeout(() => ssSnap('t1200'), 1200);
  stopped = false; r.on('data', onData); r.on('error', e => { res.error = String(e); });
  // QUIET: no new data after the restore
  setTimeout(async () => { stopWriting(); res.serverRx = { bytes: rxBytes, maxGapMs: +rxMaxGap.toFixed(1), maxGapAtMs: +rxMaxGapAt.toFixed(1) }; r.end(); r.destroy(); console.log(JSON.stringify(res)); srv.close(); process.exit(0); }, +process.env.TAIL_MS || 3500);
});
srv.listen(PORT, '0.0.0.0', () => console.error('listening'));
setTimeout(() => { console.log(JSON.stringify({ error: 'timeout', ...res })); process.exit(1); }, 20000);
