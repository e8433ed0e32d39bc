/** `node-criu migrate`: live-migrate a process tree (and its TCP connections) between network namespaces. */
import { spawn } from 'node:child_process';

import { migrateProcess, type ProcessMigrationOptions } from '../migration';
import { checkNetns, checkTaskNetns } from '../migration/process-criu';
import { checkPid } from '../migration/process-options';
import { addAddress, checkCidr, checkDevice, removeAddress } from '../sys/address';
import { findExecutable } from '../sys/exec';
import {
  CliError,
  COMMON_OPTIONS,
  EXIT,
  parse,
  positiveInteger,
  printResult,
  requireRoot,
  resolveCriu,
  UsageError,
  type Output,
} from './common';
import { migrateToAgent } from './migrate-remote';

export const MIGRATE_HELP = `Usage: node-criu migrate --pid PID --images-dir DIR --target-netns PATH [options]
       node-criu migrate --pid PID --to HOST:PORT --cert F --key F --ca F [options]

Live-migrates the process tree rooted at PID, with its established TCP connections, into
another network namespace (standing in for another host) through CRIU: pre-dumps while it
runs (when the kernel tracks memory changes), a final dump, the images carried to the target
(a directory, or CRIU's page server), the service address moved, and a restore in the target.
If anything after the dump fails, the process is restored on the source (exit code 5).
A tree with a mount namespace of its own (started by 'ip netns exec', or a service with
PrivateTmp=) is dumped from inside that namespace and restored in ours; it must not hold files
open on mounts private to it (its own /tmp): then nothing is touched and the error lists them.
With --to, the target is another host running 'node-criu agent': the images travel only over
mutual TLS 1.3 to it (nothing shared but the network), it adds the moved address and restores.

Two hosts (--to):
  --to HOST:PORT         the agent (IPv6 as [ADDR]:PORT); excludes --target-netns, --transfer,
                         --hook; --images-dir is optional (default a private temporary directory)
  --cert FILE            this source's certificate chain, PEM (chains to the agent's --ca)
  --key FILE             its private key, PEM
  --ca FILE              the CA the agent's certificate must chain to, PEM
  --move-address CIDR    removed here from --device, added by the agent (it must allow it)
  --lazy-pages           post-copy: B runs the server before its memory arrives; pages follow
                         on demand over the channel (fs.pipe-max-size >= 4 MiB on both hosts);
                         no rollback once B restores (a failure then: exit 6, process lost)

Options:
  --pid PID              root of the tree to move (required)
  --images-dir DIR       working directory for the images (required; created 0700)
  --source-netns PATH    where the tree runs now, e.g. /run/netns/NAME (default: ours)
  --target-netns PATH    where it should run (default: ours)
  --transfer MODE        directory (default) or page-server
  --no-pre-dump          skip pre-dumps
  --max-pre-dumps N      at most N pre-dumps (default 5)
  --move-address CIDR    move this address (e.g. 10.0.0.100/24) from the source's --device to
                         the target's, between the dump and the restore
  --device NAME          the interface for --move-address on both sides (default eth0)
  --hook PATH            an executable run between dump and restore with argument 'to-target'
                         (and 'to-source' if rolling back); env NODE_CRIU_PID,
                         NODE_CRIU_SOURCE_NETNS, NODE_CRIU_TARGET_NETNS. No shell is involved.
  --route ROUTE          process (default). The connections route moves sockets from inside a
                         cooperating Node process (handOverConnections); see 'node-criu demo'
  --timeout SECONDS      give up (before the dump) or roll back (after it) when exceeded
  --shell-job            the tree is a shell job
  --criu-path PATH       the criu executable to use
  --json                 print one JSON document on stdout (the result, with phase times)
  -q, --quiet            no progress on stderr
  -h, --help             this help

Exit codes: 0 migrated, 1 failed, 2 usage, 3 not root / no CRIU / no nsenter, 4 no such pid or
namespace, 5 not migrated but still running on the source, 6 not running anywhere (images kept),
7 uncertain (--to): the channel to the agent was lost after the restore was requested; nothing
was rolled back, see the message for how to check the target and restore by hand.`;

/** One step of moving the address; a failure becomes a CliError keeping the typed error's code. */
async function addressStep(step: Promise<void>): Promise<void> {
  try {
    await step;
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    throw new CliError(
      (error as Error).message,
      EXIT.FAILED,
      typeof code === 'string' ? code : 'ERR_COMMAND_FAILED',
      undefined,
      undefined,
      error,
    );
  }
}

function addressMover(
  cidr: string,
  device: string,
  from: string | undefined,
  to: string | undefined,
): () => Promise<void> {
  // Checked now, so a bad --device fails before the dump rather than after it.
  checkCidr(cidr);
  checkDevice(device);
  return async () => {
    const where = (netns: string | undefined) => ({ cidr, device, timeoutMs: 30000, ...(netns ? { netns } : {}) });
    await addressStep(removeAddress(where(from)));
    // addAddress announces it (gratuitous ARP / unsolicited NA): peers that cached the old
    // owner's MAC switch at once, no neighbour flush needed.
    await addressStep(addAddress(where(to)));
  };
}

function hookRunner(
  hook: string,
  direction: 'to-target' | 'to-source',
  env: Record<string, string>,
): () => Promise<void> {
  return () =>
    new Promise((resolve, reject) => {
      const child = spawn(hook, [direction], {
        stdio: ['ignore', 'ignore', 'inherit'],
        env: { ...process.env, ...env },
      });
      child.once('error', (error) =>
        reject(
          new CliError(
            `hook ${hook} ${direction}: ${error.message}`,
            EXIT.FAILED,
            'ERR_HOOK_FAILED',
            undefined,
            undefined,
            error,
          ),
        ),
      );
      child.once('exit', (code, signal) => {
        if (code === 0) resolve();
        else
          reject(
            new CliError(
              `hook ${hook} ${direction} exited with ${signal ?? `code ${String(code)}`}`,
              EXIT.FAILED,
              'ERR_HOOK_FAILED',
            ),
          );
      });
    });
}

export async function migrateCommand(args: string[], out: Output, signal: AbortSignal): Promise<number> {
  const values = parse(args, {
    ...COMMON_OPTIONS,
    pid: { type: 'string' },
    'images-dir': { type: 'string' },
    'source-netns': { type: 'string' },
    'target-netns': { type: 'string' },
    transfer: { type: 'string' },
    'no-pre-dump': { type: 'boolean' },
    'max-pre-dumps': { type: 'string' },
    'move-address': { type: 'string' },
    device: { type: 'string' },
    hook: { type: 'string' },
    route: { type: 'string' },
    timeout: { type: 'string' },
    'shell-job': { type: 'boolean' },
    to: { type: 'string' },
    cert: { type: 'string' },
    key: { type: 'string' },
    ca: { type: 'string' },
    'lazy-pages': { type: 'boolean' },
  });
  if (values.to !== undefined) return migrateToAgent(values, out, signal);
  for (const flag of ['cert', 'key', 'ca', 'lazy-pages'] as const)
    if (values[flag] !== undefined) throw new UsageError(`--${flag} goes with --to`);
  const route = values.route ?? 'process';
  if (route === 'connections') {
    throw new UsageError(
      "the connections route hands sockets over from inside a cooperating Node process (handOverConnections/acceptHandover in the library); it cannot move an arbitrary pid from the command line: use '--route process', or 'node-criu demo' to watch it",
    );
  }
  if (route !== 'process') throw new UsageError(`--route must be 'process' or 'connections', got '${route}'`);
  const pid = positiveInteger(values.pid, '--pid');
  if (pid === undefined) throw new UsageError('--pid is required');
  if (values['images-dir'] === undefined) throw new UsageError('--images-dir is required');
  const transfer = values.transfer ?? 'directory';
  if (transfer !== 'directory' && transfer !== 'page-server')
    throw new UsageError(`--transfer must be 'directory' or 'page-server', got '${transfer}'`);
  const maxPreDumps = positiveInteger(values['max-pre-dumps'], '--max-pre-dumps');
  const timeoutSeconds = positiveInteger(values.timeout, '--timeout');
  if (values['move-address'] !== undefined && !/^[0-9a-fA-F:.]+\/\d{1,3}$/.test(values['move-address'])) {
    throw new UsageError(
      `--move-address must be an address with its prefix length (e.g. 10.0.0.100/24), got '${values['move-address']}'`,
    );
  }
  if (values['move-address'] !== undefined && values.hook !== undefined)
    throw new UsageError('--move-address and --hook cannot be combined');
  const sourceNetns = values['source-netns'];
  const targetNetns = values['target-netns'];

  requireRoot();
  checkPid(pid);
  if (sourceNetns !== undefined) checkNetns(sourceNetns, '--source-netns');
  if (targetNetns !== undefined) checkNetns(targetNetns, '--target-netns');
  checkTaskNetns(pid, sourceNetns, '--source-netns');
  if ((sourceNetns !== undefined || targetNetns !== undefined) && findExecutable('nsenter') === undefined) {
    throw new CliError(
      'nsenter (util-linux) is not on PATH; it is needed to run CRIU inside a network namespace',
      EXIT.ENVIRONMENT,
      'ERR_NSENTER_NOT_FOUND',
    );
  }
  const { command, version } = await resolveCriu(values['criu-path'], false, out);
  out.progress(`migrating process ${pid} with CRIU ${version.text} (${transfer})`);

  const options: ProcessMigrationOptions = {
    pid,
    imagesDir: values['images-dir'],
    transfer,
    criuPath: command.path,
    signal,
    ...(sourceNetns !== undefined ? { source: { netns: sourceNetns } } : {}),
    ...(targetNetns !== undefined ? { target: { netns: targetNetns } } : {}),
    ...(values['no-pre-dump']
      ? { preDump: false as const }
      : maxPreDumps !== undefined
        ? { preDump: { maxIterations: maxPreDumps } }
        : {}),
    ...(timeoutSeconds !== undefined ? { timeoutMs: timeoutSeconds * 1000 } : {}),
    ...(values['shell-job'] ? { criuOptions: { shellJob: true } } : {}),
    onProgress: (event) => {
      const d = event.detail ?? {};
      if (d.state === 'start') out.progress(`${event.phase}...`);
      else if (d.state === 'end' && typeof d.ms === 'number') out.progress(`${event.phase} done in ${d.ms} ms`);
      else if (d.state === 'skipped' || d.state === 'warning') out.progress(`${event.phase}: ${String(d.reason)}`);
      else if (d.state === 'iteration')
        out.progress(`pre-dump ${String(d.index)}: ${String(d.pagesWritten)} pages in ${String(d.ms)} ms`);
      else if (event.phase === 'rollback')
        out.progress(`rolling back to the source${d.reason ? `: ${String(d.reason)}` : ''}`);
    },
  };
  if (values['move-address'] !== undefined) {
    const device = values.device ?? 'eth0';
    options.moveAddress = addressMover(values['move-address'], device, sourceNetns, targetNetns);
    options.moveAddressBack = addressMover(values['move-address'], device, targetNetns, sourceNetns);
  } else if (values.hook !== undefined) {
    const env = {
      NODE_CRIU_PID: String(pid),
      NODE_CRIU_SOURCE_NETNS: sourceNetns ?? '',
      NODE_CRIU_TARGET_NETNS: targetNetns ?? '',
    };
    options.moveAddress = hookRunner(values.hook, 'to-target', env);
    options.moveAddressBack = hookRunner(values.hook, 'to-source', env);
  }

  const result = await migrateProcess(options);
  const p = result.phases;
  const ms = (n: number): number => Math.round(n * 10) / 10;
  printResult(
    out,
    {
      command: 'migrate',
      route: 'process',
      ...result,
      phases: Object.fromEntries(Object.entries(p).map(([k, v]) => [k, ms(v)])),
      downtimeMs: ms(result.downtimeMs),
    },
    [
      `migrated process ${pid}: now pid ${result.restoredPid} in ${targetNetns ?? 'our network namespace'}`,
      `downtime ${Math.round(result.downtimeMs)} ms: dump ${Math.round(p.dump)}, transfer ${Math.round(p.transfer)}, move address ${Math.round(p.moveAddress)}, restore ${Math.round(p.restore)} ms (total ${Math.round(p.total)} ms)`,
      `pre-dumps: ${result.iterations.length}${result.memoryTracking ? '' : ' (memory tracking unavailable on this kernel)'}; pages: ${result.pagesBytes} bytes via ${result.transfer}`,
    ],
  );
  return EXIT.OK;
}
