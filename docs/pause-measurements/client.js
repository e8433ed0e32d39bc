// Runs inside the CLIENT netns. Streams 1000 B / 10 ms to the server, reads what the server sends,
// prints the longest gap between 'data' events (and when, relative to connect).
'use strict';
const net = require('net');
const HOST = process.env.HOST || '10.77.0.2';
const now = () => Number(process.hrtime.bigint() / 1000n) / 1000;
let last = 0, maxGap = 0, maxGapAt = 0, bytes = 0, t0 = 0; const gaps = [];
const s = net.connect(5001, HOST, () => { t0 = now(); setInterval(() => s.write(Buffer.alloc(1000, 0x62)), 10); });
s.on('data', d => { const t = now(); if (last) { const g = t - last; if (g > maxGap) { maxGap = g; maxGapAt = t - t0; } if (g > 50) gaps.push([+(t - t0).toFixed(1), +g.toFixed(1)]); } last = t; bytes += d.length; });
const fin = (why) => { console.log(JSON.stringify({ client: { why, atMs: +(now() - t0).toFixed(1), lastDataAtMs: +(last - t0).toFixed(1), bytes, maxGapMs: +maxGap.toFixed(1), maxGapAtMs: +maxGapAt.toFixed(1), gapsOver50: gaps } })); process.exit(0); };
s.on('close', () => fin('close')); s.on('error', e => fin('error ' + e.code));
setTimeout(() => fin('timeout'), 15000);
