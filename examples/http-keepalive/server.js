'use strict';
// An HTTP keep-alive server that a new version of itself can replace without dropping a
// connection or a request (run as root: the connections move with TCP_REPAIR).
//
//   node server.js                          serves on port 8080 (PORT to change it)
//   node server.js --successor-of SOCKET    waits on SOCKET for the running server's connections,
//                                           then serves them, and the port, itself
//   kill -USR2 <old pid>                    the running server hands everything to the one
//                                           waiting on SOCKET (HANDOVER_SOCKET), then exits
// README:begin
const http = require('node:http');
const { acceptServerHandover, handOverServer } = require('node-criu');

const port = Number(process.env.PORT || 8080);
const handoverSocket = process.env.HANDOVER_SOCKET || '/run/http-keepalive.sock';
const requestsOn = new WeakMap(); // per connection: how many requests it carried (moves with it)

const server = http.createServer((req, res) => {
  const n = (requestsOn.get(req.socket) || 0) + 1;
  requestsOn.set(req.socket, n);
  res.end(`hello from ${process.pid}, request ${n} on this connection\n`);
});

async function main() {
  const i = process.argv.indexOf('--successor-of');
  if (i < 0) {
    server.listen(port, () => console.log(`${process.pid}: listening on ${port}`));
  } else {
    const result = await acceptServerHandover(server, {
      from: { listen: { path: process.argv[i + 1] } },
      listen: port,
      onListening: () => console.log(`${process.pid}: waiting for the running server`),
      onConnection: (socket, state) => requestsOn.set(socket, state.readUInt32BE(0)),
    });
    console.log(`${process.pid}: took over ${result.entered} connections, listening on ${port}`);
  }
  process.once('SIGUSR2', async () => {
    const result = await handOverServer(server, {
      to: { path: handoverSocket },
      serializeState: (socket) => {
        const state = Buffer.alloc(4);
        state.writeUInt32BE(requestsOn.get(socket) || 0);
        return state;
      },
    });
    console.log(`${process.pid}: handed over ${result.handedOver} connections`);
    process.exit(0);
  });
}
// README:end

main().catch((error) => {
  console.error(`${process.pid}: ${error.code}: ${error.message}`);
  process.exit(1);
});
