/** `node-criu agent`: the migration agent on the target host, until SIGTERM/SIGINT. */
import * as fs from 'node:fs';
import * as net from 'node:net';

import { startMigrationAgent } from '../agent';
import { CliError, COMMON_OPTIONS, EXIT, parse, requireRoot, resolveCriu, UsageError, type Output } from './common';

export const AGENT_HELP = `Usage: node-criu agent --listen HOST:PORT --cert F --key F --ca F --work-dir DIR [options]

Runs the migration agent on this (the target) host: 'node-criu migrate --to HOST:PORT' on the
source host sends it a dumped process tree over mutual TLS 1.3 and it restores it here, one
migration at a time. Only sources whose certificate chains to --ca are served; the agent
decides which service address it may take over (--allow-address, --allow-device). Runs until
SIGTERM or SIGINT; a restore under way finishes first.

Options:
  --listen HOST:PORT     address to listen on (IPv6 as [ADDR]:PORT) (required)
  --cert FILE            this agent's certificate chain, PEM (required)
  --key FILE             its private key, PEM (required)
  --ca FILE              the CA sources' certificates must chain to, PEM (required)
  --work-dir DIR         an existing directory for received images (made 0700; each
                         migration's files are deleted when it ends) (required)
  --allow-address CIDR   a service address range a source may move here (repeatable);
                         none by default: a source asking to move an address is refused
  --allow-device DEV     an interface that address may be added to (repeatable; default eth0
                         when --allow-address is given)
  --max-image-bytes N    largest total of one migration's images (default 16 GiB)
  --max-files N          most image files in one migration (default 100000)
  --app-socket PATH      serve the connections route too: applications on this host register
                         here (acceptHandoverViaAgent) for their ports, and connections a source
                         hands over (handOverConnections to this agent) are restored by the agent
                         and passed to them live (fd passing); the socket is 0600 (root and us)
  --app-uid UID          also let this uid register on --app-socket (repeatable; socket 0666)
  --criu-path PATH       the criu executable to use
  --json                 one JSON line per event on stdout
  -q, --quiet            no progress on stderr
  -h, --help             this help

Exit codes: 0 stopped by a signal, 1 failed, 2 usage, 3 not root / no CRIU.`;

/** "HOST:PORT" or "[V6]:PORT" → { host, port }. */
export function hostPort(value: string | undefined, flag: string): { host: string; port: number } {
  if (value === undefined) throw new UsageError(`${flag} is required`);
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(value) ?? /^([^:[\]]+):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port < 1 || port > 65535)
    throw new UsageError(`${flag} must be HOST:PORT (IPv6: [ADDR]:PORT), got '${value}'`);
  return { host: m[1], port };
}

/** Reads the PEM files (bounded) for --cert/--key/--ca. */
export function readTlsFiles(values: { cert?: string; key?: string; ca?: string }): {
  cert: string;
  key: string;
  ca: string;
} {
  const read = (flag: 'cert' | 'key' | 'ca'): string => {
    const file = values[flag];
    if (file === undefined) throw new UsageError(`--${flag} is required`);
    try {
      if (fs.statSync(file).size > 1024 * 1024) throw new UsageError(`--${flag} ${file} is larger than 1 MiB`);
      return fs.readFileSync(file, 'utf8');
    } catch (error) {
      if (error instanceof UsageError) throw error;
      throw new CliError(`cannot read --${flag} ${file}: ${(error as Error).message}`, EXIT.NOT_FOUND, 'ENOENT');
    }
  };
  return { cert: read('cert'), key: read('key'), ca: read('ca') };
}

function count(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value) || Number(value) < 1 || !Number.isSafeInteger(Number(value)))
    throw new UsageError(`${flag} must be a positive integer, got '${value}'`);
  return Number(value);
}

export async function agentCommand(args: string[], out: Output, signal: AbortSignal): Promise<number> {
  const values = parse(args, {
    ...COMMON_OPTIONS,
    listen: { type: 'string' },
    cert: { type: 'string' },
    key: { type: 'string' },
    ca: { type: 'string' },
    'work-dir': { type: 'string' },
    'allow-address': { type: 'string', multiple: true },
    'allow-device': { type: 'string', multiple: true },
    'max-image-bytes': { type: 'string' },
    'max-files': { type: 'string' },
    'app-socket': { type: 'string' },
    'app-uid': { type: 'string', multiple: true },
  });
  const listen = hostPort(values.listen, '--listen');
  if (net.isIP(listen.host) === 0) throw new UsageError(`--listen needs an IP address, got '${listen.host}'`);
  if (values['work-dir'] === undefined) throw new UsageError('--work-dir is required');
  const tls = readTlsFiles(values);
  const addresses = values['allow-address'] ?? [];
  const devices = values['allow-device'] ?? (addresses.length > 0 ? ['eth0'] : []);
  const maxImageBytes = count(values['max-image-bytes'], '--max-image-bytes');
  const maxFiles = count(values['max-files'], '--max-files');
  const appUids = (values['app-uid'] ?? []).map((uid) => {
    if (!/^\d{1,10}$/.test(uid)) throw new UsageError(`--app-uid must be a numeric uid, got '${uid}'`);
    return Number(uid);
  });
  if (appUids.length > 0 && values['app-socket'] === undefined) throw new UsageError('--app-uid needs --app-socket');
  requireRoot();
  const { command } = await resolveCriu(values['criu-path'], false, out);
  const agent = await startMigrationAgent({
    listen,
    tls,
    workDir: values['work-dir'],
    criuPath: command.path,
    allow: { addresses, devices },
    ...(values['app-socket'] !== undefined ? { appSocket: values['app-socket'] } : {}),
    ...(appUids.length > 0 ? { appUids } : {}),
    limits: {
      ...(maxImageBytes !== undefined ? { maxImageBytes } : {}),
      ...(maxFiles !== undefined ? { maxFiles } : {}),
    },
    signal,
    onEvent: (event) => {
      if (out.json) process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), ...event })}\n`);
      else
        out.progress(
          Object.entries(event)
            .map(([k, v]) => (k === 'event' ? String(v) : `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`))
            .join(' '),
        );
    },
  });
  await agent.closed;
  return EXIT.OK;
}
