// min/median/max per (mode, freeze[, tbf]) from results*.jsonl; nstat = per-netns totals over the run (fresh netns per run)
const fs = require('fs');
const files = process.argv.slice(2);
const groups = {};
for (const f of files) for (const l of fs.readFileSync(f, 'utf8').trim().split('\n')) { const r = JSON.parse(l); const k = `${f.replace(/.*\//,'')} ${r.mode} ${r.freeze}${r.tbf ? ' tbf=' + r.tbf : ''}`; (groups[k] ||= []).push(r); }
const mm = (a) => { a = a.filter(x => x != null).sort((x, y) => x - y); return a.length ? `${a[0]} / ${a[Math.floor(a.length / 2)]} / ${a[a.length - 1]}` : '-'; };
const K = ['TcpExtTCPTimeouts','TcpExtTCPLossProbes','TcpRetransSegs','TcpExtTCPSpuriousRTOs'];
console.log('| set mode freeze | n | pause ms | sent-unacked B at ckpt | client rx max gap ms | server rx max gap ms | client TO / TLP / RetransSegs / SpuriousRTO (min-max) | server TO / TLP / RetransSegs / SpuriousRTO (min-max) |');
console.log('| --- | --- | --- | --- | --- | --- | --- | --- |');
for (const [k, rs] of Object.entries(groups)) {
  const rng = (side, key) => { const v = rs.map(r => r[side][key]); return Math.min(...v) === Math.max(...v) ? `${v[0]}` : `${Math.min(...v)}-${Math.max(...v)}`; };
  console.log(`| ${k} | ${rs.length} | ${mm(rs.map(r => r.server.pauseMs))} | ${mm(rs.map(r => r.server.img && r.server.img.sentUnacked))} | ${mm(rs.map(r => r.client.maxGapMs))} | ${mm(rs.map(r => r.server.serverRx && r.server.serverRx.maxGapMs))} | ${K.map(x => rng('nstatClient', x)).join(' / ')} | ${K.map(x => rng('nstatServer', x)).join(' / ')} |`);
}
