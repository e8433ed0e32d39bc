/**
 * `node-criu demo`: runs runDemo() from lib/demo (the demo engineer's module) and prints its
 * table (or the report as JSON). Loaded at run time, so a build without the demo still starts
 * and says so.
 */
import type { DemoOptions, DemoReport, DemoRoute } from '../demo';
import { CliError, COMMON_OPTIONS, EXIT, parse, positiveInteger, printResult, UsageError, type Output } from './common';

export const DEMO_HELP = `Usage: node-criu demo [--clients N] [--routes process,connections,fd] [options]

A live demonstration: a server on host A (a network namespace) with N clients streaming both
ways is migrated to host B by each route in turn, and a table shows what the clients saw
(connections kept, bytes exact both ways, resets, the longest pause, phase times):
  process      the whole process with CRIU (migrateProcess)
  connections  only the connections, with TCP_REPAIR (handOverConnections)
  fd           the connections' fds passed to a successor process on the same host
Everything runs in namespaces the demo creates and removes (also on Ctrl-C).

Options:
  --clients N        client connections (default 300)
  --routes LIST      comma-separated routes (default process,connections,fd)
  --warmup-ms MS     traffic before each migration (default 1500)
  --after-ms MS      traffic after it (default 1000)
  --pace-bytes N     bytes each connection sends per tick, each way (default 512)
  --pace-ms MS       the tick (default 20)
  --criu-path PATH   the criu executable (default: found, or installed on first use)
  --json             print the report as one JSON document on stdout
  -q, --quiet        no progress on stderr
  -h, --help         this help

Exit codes: 0 every route kept everything, 1 a route lost something or failed, 3 not root or a tool is missing.`;

interface DemoModule {
  runDemo(options: DemoOptions): Promise<DemoReport>;
  formatDemoTable(report: DemoReport): string;
}

function loadDemo(): DemoModule {
  try {
    return require('../demo') as DemoModule;
  } catch (error) {
    throw new CliError(
      `the demo is not part of this build (${(error as Error).message.split('\n')[0]})`,
      EXIT.ENVIRONMENT,
      'ERR_DEMO_MISSING',
    );
  }
}

const DEMO_EXIT: Record<string, number> = {
  ERR_DEMO_NOT_ROOT: EXIT.ENVIRONMENT,
  ERR_DEMO_TOOL_MISSING: EXIT.ENVIRONMENT,
  ERR_DEMO_ARGS: EXIT.USAGE,
};

function nonNegative(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value)) throw new UsageError(`${flag} must be a non-negative integer, got '${value}'`);
  return Number(value);
}

export async function demoCommand(args: string[], out: Output, signal: AbortSignal): Promise<number> {
  const values = parse(args, {
    ...COMMON_OPTIONS,
    clients: { type: 'string' },
    routes: { type: 'string' },
    'warmup-ms': { type: 'string' },
    'after-ms': { type: 'string' },
    'pace-bytes': { type: 'string' },
    'pace-ms': { type: 'string' },
  });
  const routes = values.routes?.split(',').map((r) => r.trim()) as DemoRoute[] | undefined;
  const numbers = {
    clients: positiveInteger(values.clients, '--clients'),
    warmupMs: nonNegative(values['warmup-ms'], '--warmup-ms'),
    afterMs: nonNegative(values['after-ms'], '--after-ms'),
    paceBytes: positiveInteger(values['pace-bytes'], '--pace-bytes'),
    paceMs: positiveInteger(values['pace-ms'], '--pace-ms'),
  };
  const demo = loadDemo();
  const options: DemoOptions = { log: (line) => out.progress(line), signal };
  for (const [key, value] of Object.entries(numbers))
    if (value !== undefined) (options as Record<string, unknown>)[key] = value;
  if (routes !== undefined) options.routes = routes;
  if (values['criu-path'] !== undefined) options.criuPath = values['criu-path'];
  let report: DemoReport;
  try {
    report = await demo.runDemo(options);
  } catch (error) {
    const code = (error as { code?: string }).code ?? '';
    if (DEMO_EXIT[code] !== undefined) throw new CliError((error as Error).message, DEMO_EXIT[code], code);
    throw error;
  }
  printResult(out, { command: 'demo', ok: report.ok, report }, [demo.formatDemoTable(report)]);
  return report.ok ? EXIT.OK : EXIT.FAILED;
}
