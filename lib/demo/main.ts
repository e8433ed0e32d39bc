/**
 * `node dist/demo/main.js [--clients N] [--routes process,connections,fd]`: runs the demo and
 * prints its table (the package's CLI `npx node-criu demo` calls runDemo the same way).
 */
import { formatDemoTable, runDemo } from './index';
import type { DemoRoute } from './index';

function argValue(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

async function main(): Promise<void> {
  const clients = argValue('--clients');
  const routes = argValue('--routes');
  const report = await runDemo({
    ...(clients !== undefined ? { clients: Number(clients) } : {}),
    ...(routes !== undefined ? { routes: routes.split(',') as DemoRoute[] } : {}),
    log: (line) => process.stderr.write(`${line}\n`),
  });
  process.stdout.write(`${formatDemoTable(report)}\n`);
  process.exitCode = report.ok ? 0 : 1;
}

main().catch((error: Error & { code?: string }) => {
  process.stderr.write(`demo failed: ${error.code ? `${error.code}: ` : ''}${error.message}\n`);
  process.exitCode = 1;
});
