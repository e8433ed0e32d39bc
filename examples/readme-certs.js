#!/usr/bin/env node
'use strict';
/**
 * README.md "Two hosts", the certificates: the README's openssl commands (between README:begin
 * and README:end, checked against the README by test/readme) run by bash in a scratch directory,
 * then the certificates are put to work in a mutual TLS 1.3 handshake over loopback, the agent's
 * side checked against the address it names (10.0.0.2). Any user; needs openssl.
 *
 *   node examples/readme-certs.js
 */
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const tls = require('node:tls');

const README_BLOCK = String.raw`
# README:begin
openssl ecparam -name prime256v1 -genkey -noout -out ca-key.pem
openssl req -x509 -new -key ca-key.pem -subj '/CN=node-criu CA' -days 365 -out ca.pem \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
openssl ecparam -name prime256v1 -genkey -noout -out agent-key.pem
openssl req -new -key agent-key.pem -subj '/CN=agent-b' -out agent.csr
printf 'extendedKeyUsage=serverAuth\nsubjectAltName=IP:10.0.0.2\n' > agent.ext
openssl x509 -req -in agent.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 365 -extfile agent.ext -out agent.pem
openssl ecparam -name prime256v1 -genkey -noout -out source-key.pem
openssl req -new -key source-key.pem -subj '/CN=source-a' -out source.csr
printf 'extendedKeyUsage=clientAuth\n' > source.ext
openssl x509 -req -in source.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 365 -extfile source.ext -out source.pem
# README:end
`;

async function handshake(dir) {
  const read = (name) => fs.readFileSync(path.join(dir, name));
  const server = tls.createServer({
    key: read('agent-key.pem'),
    cert: read('agent.pem'),
    ca: read('ca.pem'),
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.3',
  });
  const peer = new Promise((resolve) =>
    server.once('secureConnection', (s) => resolve(s.getPeerCertificate().subject.CN)),
  );
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const socket = tls.connect({
      host: '127.0.0.1',
      port: server.address().port,
      key: read('source-key.pem'),
      cert: read('source.pem'),
      ca: read('ca.pem'),
      minVersion: 'TLSv1.3',
      // The agent's certificate names 10.0.0.2, the address the source would connect to.
      checkServerIdentity: (_host, cert) => tls.checkServerIdentity('10.0.0.2', cert),
    });
    await new Promise((resolve, reject) => socket.once('secureConnect', resolve).once('error', reject));
    const result = {
      agent: socket.getPeerCertificate().subject.CN,
      source: await peer,
      protocol: socket.getProtocol(),
    };
    socket.destroy();
    return result;
  } finally {
    server.close();
  }
}

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'node-criu-certs-'));
  try {
    const run = spawnSync('bash', ['-euo', 'pipefail', '-c', README_BLOCK], {
      cwd: dir,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    if (run.status !== 0) throw new Error(`the README's openssl commands failed: ${run.stderr}`);
    const result = await handshake(dir);
    const ok = result.agent === 'agent-b' && result.source === 'source-a' && result.protocol === 'TLSv1.3';
    console.log(`mutual TLS: source ${result.source} <-> agent ${result.agent} (${result.protocol})`);
    console.log(ok ? 'ok' : 'FAILED');
    return ok ? 0 : 1;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  (code) => process.exit(code),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);
