/** `node-criu check`: can this machine checkpoint and migrate? (root, CRIU, kernel, tools). */
import { criuCapabilityProblem } from '../capabilities';
import { Criu, type CriuFeatures } from '../criu';
import { findExecutable } from '../sys/exec';
import { findNft } from '../sys/nft';
import { CliError, COMMON_OPTIONS, EXIT, isRoot, parse, printResult, resolveCriu, type Output } from './common';

export const CHECK_HELP = `Usage: node-criu check [--install] [--criu-path PATH] [--json] [--quiet]

Checks that this machine can checkpoint and migrate processes: running as root, a CRIU 4.2+
that answers over RPC, CRIU's kernel checks (criu check), its optional features (memory
tracking for pre-dumps, lazy pages, pidfd store), and the tools migrate uses (nsenter, nft).

Options:
  --install          install CRIU 4.2.1 (scripts/install-criu.sh) if none is found
  --criu-path PATH   the criu executable to use (default: CRIU_PATH, the install cache, PATH)
  --json             print one JSON document on stdout
  -q, --quiet        no progress on stderr
  -h, --help         this help

Exit codes: 0 usable, 3 not usable here (not root, CRIU missing, too old or failing its checks).`;

export async function checkCommand(args: string[], out: Output): Promise<number> {
  const values = parse(args, { ...COMMON_OPTIONS, install: { type: 'boolean' } });
  const problems: string[] = [];
  const root = isRoot();
  if (!root) problems.push('not running as root (CRIU needs CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_NET_ADMIN)');
  const capabilities = criuCapabilityProblem();
  if (root && capabilities !== undefined)
    problems.push(`root without ${capabilities.missing.join(', ')}: ${capabilities.hint}`);
  const tools = { nsenter: findExecutable('nsenter') ?? null, nft: findNft() ?? null };
  if (tools.nsenter === null) problems.push('nsenter (util-linux) not found: migrate cannot enter network namespaces');
  if (tools.nft === null) problems.push('nft (nftables) not found: migrate cannot hold connections on the target');
  if (!root) {
    throw new CliError(problems.join('; '), EXIT.ENVIRONMENT, 'ERR_NOT_ROOT', 'run it with sudo');
  }
  const { command, version } = await resolveCriu(values['criu-path'], values.install === true, out);
  out.progress(`CRIU ${version.text} at ${command.path} (${command.source})`);
  const criu = new Criu({ criuPath: command.path });
  let kernelOk = true;
  let kernelError: string | undefined;
  let features: CriuFeatures;
  try {
    out.progress('running CRIU kernel checks');
    try {
      await criu.check({ timeoutMs: 60000 });
    } catch (error) {
      kernelOk = false;
      kernelError = (error as Error).message;
      problems.push(`CRIU's kernel checks failed: ${kernelError}`);
    }
    features = await criu.featureCheck({ memTrack: true, lazyPages: true, pidfdStore: true }, { timeoutMs: 30000 });
  } finally {
    await criu.close();
  }
  const notes: string[] = [];
  if (features.memTrack !== true)
    notes.push(
      'memory tracking is off (CONFIG_MEM_SOFT_DIRTY): migrate skips pre-dumps; the whole memory is copied while the process is frozen',
    );
  const ok = problems.length === 0;
  printResult(
    out,
    {
      ok,
      root,
      criu: { path: command.path, source: command.source, version: version.text },
      kernelChecks: kernelOk ? 'passed' : 'failed',
      ...(kernelError !== undefined ? { kernelError } : {}),
      features,
      tools,
      problems,
      notes,
    },
    [
      `CRIU: ${version.text} (${command.path}, found via ${command.source})`,
      `kernel checks: ${kernelOk ? 'passed' : `FAILED: ${kernelError}`}`,
      `features: memory tracking ${features.memTrack ? 'yes' : 'no'}, lazy pages ${features.lazyPages ? 'yes' : 'no'}, pidfd store ${features.pidfdStore ? 'yes' : 'no'}`,
      `tools: nsenter ${tools.nsenter ?? 'MISSING'}, nft ${tools.nft ?? 'MISSING'}`,
      ...notes.map((n) => `note: ${n}`),
      ...problems.map((p) => `problem: ${p}`),
      ok
        ? 'this machine can checkpoint and migrate processes'
        : 'this machine cannot checkpoint and migrate processes yet',
    ],
  );
  return ok ? EXIT.OK : EXIT.ENVIRONMENT;
}
