'use strict';
/**
 * The node:http keep-alive server that bench/http-migration-bench.js moves (whole process, CRIU).
 * Run detached (stdio /dev/null, UV_USE_IO_URING=0) inside a network namespace. Config: JSON in
 * argv[2]: { statusDir, host, port, connections }. Writes statusDir/listening (its pid) once bound
 * and statusDir/all-accepted once `connections` sockets are accepted (CRIU refuses to dump
 * connections still in the accept queue). Answers every request with a small body. Runs until killed.
 */
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');

const config = JSON.parse(process.argv[2]);
const body = Buffer.alloc(256, 'x');
let accepted = 0;

const server = http.createServer({ keepAlive: true, keepAliveTimeout: 60_000 }, (req, res) => {
  req.resume();
  req.on('end', () => {
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length });
    res.end(body);
  });
});
server.keepAliveTimeout = 60_000;
server.headersTimeout = 65_000;
server.requestTimeout = 0;
server.on('connection', () => {
  accepted++;
  if (accepted === config.connections) fs.writeFileSync(path.join(config.statusDir, 'all-accepted'), '1');
});
server.listen(config.port, config.host, () => {
  fs.writeFileSync(path.join(config.statusDir, 'listening'), String(process.pid));
});
