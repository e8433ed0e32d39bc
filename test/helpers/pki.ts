/**
 * Test certificates made with the openssl CLI in a private temporary directory: a CA, server and
 * client certificates signed by it (IP and DNS SANs), a second unrelated CA with its own client,
 * and an expired client certificate (`openssl ca` with explicit start and end dates). remove()
 * deletes everything.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export interface Credentials {
  cert: string;
  key: string;
  ca: string;
}

export interface TestPki {
  dir: string;
  ca: string;
  /** Server certificate for the given names (SAN IP:... or DNS:...), signed by ca. */
  server: Credentials;
  /** Client certificate signed by ca. */
  client: Credentials;
  /** Client whose certificate is signed by another CA (its ca field is the good CA, so it trusts the server). */
  strangerClient: Credentials;
  /** Server certificate from the other CA (a client trusting `ca` must refuse it). */
  strangerServer: Credentials;
  /** Client certificate signed by ca, valid only in 2020. */
  expiredClient: Credentials;
  /** File paths of each PEM (for the CLI): `${dir}/<name>.pem`. */
  file(name: string): string;
  remove(): void;
}

function openssl(dir: string, args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

function keyAndCsr(dir: string, name: string, cn: string): void {
  openssl(dir, ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', `${name}-key.pem`]);
  openssl(dir, ['req', '-new', '-key', `${name}-key.pem`, '-subj', `/CN=${cn}`, '-out', `${name}.csr`]);
}

function selfSignedCa(dir: string, name: string, cn: string): void {
  openssl(dir, ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', `${name}-key.pem`]);
  openssl(dir, [
    'req',
    '-x509',
    '-new',
    '-key',
    `${name}-key.pem`,
    '-subj',
    `/CN=${cn}`,
    '-days',
    '2',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
    '-out',
    `${name}.pem`,
  ]);
}

function sign(dir: string, ca: string, name: string, usage: 'serverAuth' | 'clientAuth', san: string[]): void {
  const ext = [
    'basicConstraints=CA:FALSE',
    `extendedKeyUsage=${usage}`,
    ...(san.length > 0 ? [`subjectAltName=${san.join(',')}`] : []),
  ].join('\n');
  fs.writeFileSync(path.join(dir, `${name}.ext`), ext + '\n');
  openssl(dir, [
    'x509',
    '-req',
    '-in',
    `${name}.csr`,
    '-CA',
    `${ca}.pem`,
    '-CAkey',
    `${ca}-key.pem`,
    '-CAcreateserial',
    '-days',
    '2',
    '-extfile',
    `${name}.ext`,
    '-out',
    `${name}.pem`,
  ]);
}

/** Signs with explicit validity dates through `openssl ca` (x509 -req cannot backdate in OpenSSL 3.0). */
function signExpired(dir: string, ca: string, name: string): void {
  fs.mkdirSync(path.join(dir, 'ca-db'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'ca-db', 'index.txt'), '');
  fs.writeFileSync(path.join(dir, 'ca-db', 'serial'), '1000\n');
  fs.writeFileSync(
    path.join(dir, 'ca.cnf'),
    [
      '[ca]',
      'default_ca = test',
      '[test]',
      'dir = ca-db',
      'database = $dir/index.txt',
      'serial = $dir/serial',
      'new_certs_dir = $dir',
      'default_md = sha256',
      'policy = any',
      'x509_extensions = ext',
      'unique_subject = no',
      '[any]',
      'commonName = supplied',
      '[ext]',
      'basicConstraints = CA:FALSE',
      'extendedKeyUsage = clientAuth',
      '',
    ].join('\n'),
  );
  openssl(dir, [
    'ca',
    '-batch',
    '-config',
    'ca.cnf',
    '-cert',
    `${ca}.pem`,
    '-keyfile',
    `${ca}-key.pem`,
    '-startdate',
    '20200101000000Z',
    '-enddate',
    '20200102000000Z',
    '-in',
    `${name}.csr`,
    '-out',
    `${name}.pem`,
  ]);
}

/** Makes the whole set; `serverNames` become the server certificate's SANs (e.g. ['IP:10.77.0.2', 'DNS:agent']). */
export function makeTestPki(serverNames: string[] = ['IP:127.0.0.1', 'DNS:localhost']): TestPki {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'node-criu-pki-'));
  fs.chmodSync(dir, 0o700);
  const read = (name: string): string => fs.readFileSync(path.join(dir, name), 'utf8');
  try {
    selfSignedCa(dir, 'ca', 'node-criu test CA');
    selfSignedCa(dir, 'other-ca', 'stranger CA');
    keyAndCsr(dir, 'server', 'agent');
    sign(dir, 'ca', 'server', 'serverAuth', serverNames);
    keyAndCsr(dir, 'client', 'source');
    sign(dir, 'ca', 'client', 'clientAuth', []);
    keyAndCsr(dir, 'stranger-client', 'stranger');
    sign(dir, 'other-ca', 'stranger-client', 'clientAuth', []);
    keyAndCsr(dir, 'stranger-server', 'agent');
    sign(dir, 'other-ca', 'stranger-server', 'serverAuth', serverNames);
    keyAndCsr(dir, 'expired-client', 'expired');
    signExpired(dir, 'ca', 'expired-client');
  } catch (error) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw error;
  }
  const ca = read('ca.pem');
  const creds = (name: string): Credentials => ({ cert: read(`${name}.pem`), key: read(`${name}-key.pem`), ca });
  return {
    dir,
    ca,
    server: creds('server'),
    client: creds('client'),
    strangerClient: creds('stranger-client'),
    strangerServer: creds('stranger-server'),
    expiredClient: creds('expired-client'),
    file: (name) => path.join(dir, `${name}.pem`),
    remove: () => fs.rmSync(dir, { recursive: true, force: true }),
  };
}
