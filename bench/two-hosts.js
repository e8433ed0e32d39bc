'use strict';
/**
 * The two-host pieces of bench/migration-process-bench.js: certificates made with openssl, the
 * agent on T (its own mount namespace, and pid namespace for lazy pages) and the migrate command on
 * S. A factory over the bench's names: { nsPath, hostIp, VIP, pids, CLI, AGENT_PORT }.
 */
const { execFileSync, spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

module.exports = function twoHosts({ nsPath, hostIp, VIP, pids, CLI, AGENT_PORT }) {
  /** A CA, a server certificate for T's address and a client certificate (openssl, in `dir`). */
  function makeCertificates(dir) {
    const openssl = (args) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
    const key = (name) => openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', `${name}-key.pem`]);
    key('ca');
    // A CA certificate must say so (basicConstraints, keyUsage): OpenSSL refuses it as an issuer otherwise.
    openssl([
      'req',
      '-x509',
      '-new',
      '-key',
      'ca-key.pem',
      '-subj',
      '/CN=bench CA',
      '-days',
      '1',
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
      '-out',
      'ca.pem',
    ]);
    for (const [name, ext] of [
      ['agent', `extendedKeyUsage=serverAuth\nsubjectAltName=IP:${hostIp(3)}`],
      ['source', 'extendedKeyUsage=clientAuth'],
    ]) {
      key(name);
      openssl(['req', '-new', '-key', `${name}-key.pem`, '-subj', `/CN=${name}`, '-out', `${name}.csr`]);
      fs.writeFileSync(path.join(dir, `${name}.ext`), ext.replace('\\n', '\n') + '\n');
      openssl([
        'x509',
        '-req',
        '-in',
        `${name}.csr`,
        '-CA',
        'ca.pem',
        '-CAkey',
        'ca-key.pem',
        '-CAcreateserial',
        '-days',
        '1',
        '-extfile',
        `${name}.ext`,
        '-out',
        `${name}.pem`,
      ]);
    }
    const read = (name) => fs.readFileSync(path.join(dir, name), 'utf8');
    return { ca: read('ca.pem'), cert: read('source.pem'), key: read('source-key.pem'), dir };
  }

  /**
   * `node-criu migrate --to` run on S, as a user runs it on the source host (its TLS connection to
   * the agent leaves from S's network); resolves with the CLI's --json result.
   */
  function migrateFromHost(pid, lazy, pki) {
    return new Promise((resolve, reject) => {
      const child = spawn(
        'nsenter',
        [
          `--net=${nsPath('s')}`,
          '--',
          process.execPath,
          CLI,
          'migrate',
          '--pid',
          String(pid),
          '--to',
          `${hostIp(3)}:${AGENT_PORT}`,
          '--cert',
          path.join(pki.dir, 'source.pem'),
          '--key',
          path.join(pki.dir, 'source-key.pem'),
          '--ca',
          path.join(pki.dir, 'ca.pem'),
          '--move-address',
          `${VIP}/24`,
          '--device',
          'eth0',
          ...(lazy ? ['--lazy-pages'] : []),
          '--json',
          '--quiet',
        ],
        { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, UV_USE_IO_URING: '0' } },
      );
      let out = '';
      let err = '';
      child.stdout.on('data', (chunk) => (out += chunk));
      child.stderr.on('data', (chunk) => (err += chunk));
      child.once('exit', (code) => {
        if (code === 0) return resolve(JSON.parse(out));
        const error = new Error(`migrate --to exited ${code}: ${err.trim().split('\n').pop()}`);
        error.code = `exit ${code}`;
        reject(error);
      });
    });
  }

  /**
   * `node-criu agent` on T, in a private mount namespace whose work directory is a tmpfs only it
   * sees; with `privatePid` also in a pid namespace of its own, whose pid 1 it is (killing the
   * unshare we spawn kills it and everything restored there: --kill-child).
   */
  async function startAgent(pki, workDir, privatePid) {
    fs.mkdirSync(workDir, { mode: 0o700 });
    const child = spawn(
      'nsenter',
      [
        `--net=${nsPath('t')}`,
        '--',
        'unshare',
        '--mount',
        ...(privatePid ? ['--pid', '--fork', '--mount-proc', '--kill-child'] : []),
        '--propagation',
        'private',
        '--',
        'sh',
        '-c',
        'mount -t tmpfs -o mode=0700 tmpfs "$0" && exec "$@"',
        workDir,
        process.execPath,
        CLI,
        'agent',
        '--listen',
        `${hostIp(3)}:${AGENT_PORT}`,
        '--cert',
        path.join(pki.dir, 'agent.pem'),
        '--key',
        path.join(pki.dir, 'agent-key.pem'),
        '--ca',
        path.join(pki.dir, 'ca.pem'),
        '--work-dir',
        workDir,
        '--allow-address',
        `${VIP}/24`,
        '--allow-device',
        'eth0',
        '--json',
      ],
      { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, UV_USE_IO_URING: '0' } },
    );
    pids.add(child.pid);
    await new Promise((resolve, reject) => {
      let seen = '';
      const timer = setTimeout(() => reject(new Error('the agent did not start listening')), 30000);
      child.stdout.on('data', (chunk) => {
        seen += chunk;
        if (/"event":"listening"/.test(seen)) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('exit', (code) => reject(new Error(`the agent exited (${code}) before listening`)));
    });
    child.stdout.resume();
    return child;
  }

  return { makeCertificates, migrateFromHost, startAgent };
};
