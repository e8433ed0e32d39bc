/** `node-criu migrate --to HOST:PORT`: the two-host form (the agent restores on the other host). */
import { migrateProcess, type RemoteProcessMigrationOptions } from '../migration';
import { checkNetns, checkTaskNetns } from '../migration/process-criu';
import { checkPid } from '../migration/process-options';
import { hostPort, readTlsFiles } from './agent';
import { EXIT, positiveInteger, printResult, requireRoot, resolveCriu, UsageError, type Output } from './common';

type Values = Record<string, string | boolean | undefined>;

const LOCAL_ONLY = ['target-netns', 'transfer', 'hook', 'no-pre-dump', 'max-pre-dumps'] as const;

export async function migrateToAgent(values: Values, out: Output, signal: AbortSignal): Promise<number> {
  for (const flag of LOCAL_ONLY)
    if (values[flag] !== undefined) throw new UsageError(`--${flag} cannot be combined with --to`);
  if ((values.route ?? 'process') !== 'process') throw new UsageError('--to moves a process: --route must be process');
  const to = hostPort(values.to as string, '--to');
  const pid = positiveInteger(values.pid as string | undefined, '--pid');
  if (pid === undefined) throw new UsageError('--pid is required');
  const tls = readTlsFiles(values as { cert?: string; key?: string; ca?: string });
  const cidr = values['move-address'] as string | undefined;
  if (cidr !== undefined && !/^[0-9a-fA-F:.]+\/\d{1,3}$/.test(cidr))
    throw new UsageError(
      `--move-address must be an address with its prefix length (e.g. 10.0.0.100/24), got '${cidr}'`,
    );
  const timeoutSeconds = positiveInteger(values.timeout as string | undefined, '--timeout');
  const sourceNetns = values['source-netns'] as string | undefined;
  requireRoot();
  checkPid(pid);
  if (sourceNetns !== undefined) checkNetns(sourceNetns, '--source-netns');
  checkTaskNetns(pid, sourceNetns, '--source-netns');
  const { command, version } = await resolveCriu(values['criu-path'] as string | undefined, false, out);
  out.progress(`migrating process ${pid} to the agent at ${to.host}:${to.port} with CRIU ${version.text}`);
  const options: RemoteProcessMigrationOptions = {
    pid,
    to: { ...to, tls },
    criuPath: command.path,
    signal,
    ...(values['images-dir'] !== undefined ? { imagesDir: values['images-dir'] as string } : {}),
    ...(sourceNetns !== undefined ? { source: { netns: sourceNetns } } : {}),
    ...(cidr !== undefined ? { moveAddress: { cidr, device: (values.device as string | undefined) ?? 'eth0' } } : {}),
    ...(values['lazy-pages'] === true ? { lazyPages: true } : {}),
    ...(timeoutSeconds !== undefined ? { timeoutMs: timeoutSeconds * 1000 } : {}),
    ...(values['shell-job'] === true ? { criuOptions: { shellJob: true } } : {}),
    onProgress: (event) => {
      const d = event.detail ?? {};
      if (d.state === 'start') out.progress(`${event.phase}...`);
      else if (d.state === 'end' && typeof d.ms === 'number') out.progress(`${event.phase} done in ${d.ms} ms`);
      else if (d.state === 'welcome') out.progress(`agent ${String(d.agent)} (CRIU ${String(d.criuVersion)}) accepted`);
      else if (event.phase === 'rollback')
        out.progress(`rolling back to the source${d.reason ? `: ${String(d.reason)}` : ''}`);
    },
  };
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
      `migrated process ${pid}: now pid ${result.restoredPid} on ${to.host} (agent ${result.agent.name ?? '?'})`,
      `downtime ${Math.round(result.downtimeMs)} ms: dump ${Math.round(p.dump)}, transfer ${Math.round(p.transfer)}, move address ${Math.round(p.moveAddress)}, restore ${Math.round(p.restore)} ms (total ${Math.round(p.total)} ms)`,
      `images: ${result.files} files, ${result.bytes} bytes (pages ${result.pagesBytes})`,
    ],
  );
  return EXIT.OK;
}
