const fs=require('fs');
const rows=fs.readFileSync(process.argv[2]||'results.jsonl','utf8').trim().split('\n').map(l=>{try{return JSON.parse(l)}catch(e){return {bad:l.slice(0,200)}}});
const K=['TcpExtTCPTimeouts','TcpExtTCPLossProbes','TcpRetransSegs','TcpExtTCPSpuriousRTOs','TcpExtTCPFastRetrans','TcpExtTCPSackRecovery','TcpExtTCPWinProbe','TcpExtTCPLossUndo','TcpOutRsts'];
const ab={TcpExtTCPTimeouts:'TO',TcpExtTCPLossProbes:'TLP',TcpRetransSegs:'Retr',TcpExtTCPSpuriousRTOs:'SpRTO',TcpExtTCPFastRetrans:'FR',TcpExtTCPSackRecovery:'SackRec',TcpExtTCPWinProbe:'WinPr',TcpExtTCPLossUndo:'LUndo',TcpOutRsts:'RST'};
console.log('| mode | freeze | run | pause ms (ckpt/restore) | sent-unacked/unsent B | client max gap ms (at) | server rx max gap ms | client '+K.map(k=>ab[k]).join('/')+' | server '+K.map(k=>ab[k]).join('/')+' |');
console.log('|'+' --- |'.repeat(9));
for(const r of rows){ if(r.bad){console.log('| BAD | '+r.bad+' |');continue;}
 const s=r.server||{}; const c=r.client||{};
 console.log(`| ${r.mode} | ${r.freeze} | ${r.run} | ${s.pauseMs} (${s.checkpointMs}/${s.restoreMs}) | ${s.img?s.img.sentUnacked+'/'+s.img.unsqLen:'-'} | ${c.maxGapMs} (${c.maxGapAtMs}; restored at ${s.restoredAtMs}) | ${s.serverRx?s.serverRx.maxGapMs:'-'} | ${K.map(k=>r.nstatClient[k]).join('/')} | ${K.map(k=>r.nstatServer[k]).join('/')} |${s.error?' ERR '+s.error:''}${c.why&&c.why!=='close'?' client:'+c.why:''}`);
}
