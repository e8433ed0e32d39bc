/**
 * The demo's certificates, made with the openssl command in the demo's private state directory:
 * a CA, the agent's server certificate (for host B's address) and the clients' certificates (the
 * source side of each route), all EC P-256, valid one day. The same commands a user runs for two
 * real hosts (README, "Two hosts").
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import type { TlsCredentials } from '../transport/tls';
import { run } from '../sys/exec';
import { DemoError } from './errors';

export interface DemoPki {
  dir: string;
  /** PEM files for the agent's command line. */
  files: { ca: string; agentCert: string; agentKey: string; sourceCert: string; sourceKey: string };
  /** The source's credentials (handOverConnections / migrateProcess `to.tls`). */
  source: TlsCredentials;
  /** The agent's, for an in-process TLS server (acceptHandover). */
  agent: TlsCredentials;
}

async function openssl(dir: string, args: string[]): Promise<void> {
  try {
    await run(
      'openssl',
      args.map((a) => (a.startsWith('@') ? path.join(dir, a.slice(1)) : a)),
      { timeoutMs: 30000 },
    );
  } catch (error) {
    const code = (error as { code?: string }).code;
    throw new DemoError(
      code === 'ERR_COMMAND_NOT_FOUND'
        ? 'the demo makes its TLS certificates with openssl, which is not installed (apt-get install openssl)'
        : `openssl ${args[0]} failed: ${(error as Error).message}`,
      'ERR_DEMO_PKI',
    );
  }
}

export async function makeDemoPki(dir: string, agentAddress: string): Promise<DemoPki> {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const key = (name: string) =>
    openssl(dir, ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', `@${name}-key.pem`]);
  await key('ca');
  await openssl(dir, [
    'req',
    '-x509',
    '-new',
    '-key',
    '@ca-key.pem',
    '-subj',
    '/CN=node-criu demo CA',
    '-days',
    '1',
    '-out',
    '@ca.pem',
  ]);
  const extensions: Record<string, string> = {
    agent: `extendedKeyUsage=serverAuth\nsubjectAltName=IP:${agentAddress}\n`,
    source: 'extendedKeyUsage=clientAuth\n',
  };
  for (const [name, ext] of Object.entries(extensions)) {
    await key(name);
    await openssl(dir, [
      'req',
      '-new',
      '-key',
      `@${name}-key.pem`,
      '-subj',
      `/CN=demo ${name}`,
      '-out',
      `@${name}.csr`,
    ]);
    fs.writeFileSync(path.join(dir, `${name}.ext`), ext, { mode: 0o600 });
    await openssl(dir, [
      'x509',
      '-req',
      '-in',
      `@${name}.csr`,
      '-CA',
      '@ca.pem',
      '-CAkey',
      '@ca-key.pem',
      '-CAcreateserial',
      '-days',
      '1',
      '-extfile',
      `@${name}.ext`,
      '-out',
      `@${name}.pem`,
    ]);
  }
  const read = (name: string) => fs.readFileSync(path.join(dir, name), 'utf8');
  const ca = read('ca.pem');
  return {
    dir,
    files: {
      ca: path.join(dir, 'ca.pem'),
      agentCert: path.join(dir, 'agent.pem'),
      agentKey: path.join(dir, 'agent-key.pem'),
      sourceCert: path.join(dir, 'source.pem'),
      sourceKey: path.join(dir, 'source-key.pem'),
    },
    source: { cert: read('source.pem'), key: read('source-key.pem'), ca },
    agent: { cert: read('agent.pem'), key: read('agent-key.pem'), ca },
  };
}
