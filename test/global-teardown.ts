/**
 * After the last suite: nothing a test started may outlive the run. A process left behind (found
 * by the NODE_CRIU_TEST_RUN mark scripts/jest-isolated.sh puts in the environment of everything
 * the run starts, by the run's private network namespace, or by holding the run's stdout/stderr)
 * keeps CI waiting for an end that never comes; so does a handle left open in this process. Both
 * are reported by name and fail the run instead of hanging it.
 */
import * as fs from 'node:fs';

function link(path: string): string | undefined {
  try {
    return fs.readlinkSync(path);
  } catch {
    return undefined;
  }
}

function parentOf(pid: number): number | undefined {
  try {
    // comm may hold spaces and parentheses: the fields after its closing parenthesis are fixed.
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return undefined;
  }
}

function ancestorsOfSelf(): Set<number> {
  const ancestors = new Set<number>([process.pid]);
  for (let pid = parentOf(process.pid); pid !== undefined && pid > 0 && !ancestors.has(pid); pid = parentOf(pid)) {
    ancestors.add(pid);
  }
  return ancestors;
}

interface Leftover {
  pid: number;
  why: string;
  command: string;
}

function hasMark(pid: number, mark: string): boolean {
  try {
    return fs.readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0').includes(mark);
  } catch {
    return false;
  }
}

/** Processes other than jest and its ancestors that the run started, or in its namespace or on its output. */
export function leftoverProcesses(): Leftover[] {
  const run = process.env.NODE_CRIU_TEST_RUN;
  const mark = run ? `NODE_CRIU_TEST_RUN=${run}` : undefined;
  const ownNet = link('/proc/self/ns/net');
  const ownOutputs = new Set([link('/proc/self/fd/1'), link('/proc/self/fd/2')].filter((t) => t?.startsWith('pipe:')));
  const skip = ancestorsOfSelf();
  const found: Leftover[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || skip.has(pid)) continue;
    const reasons: string[] = [];
    if (mark !== undefined && hasMark(pid, mark)) reasons.push('started by this run');
    if (ownNet !== undefined && link(`/proc/${pid}/ns/net`) === ownNet) reasons.push('in the run network namespace');
    for (const fd of [1, 2]) {
      const target = link(`/proc/${pid}/fd/${fd}`);
      if (target !== undefined && ownOutputs.has(target)) reasons.push(`fd ${fd} on the run output ${target}`);
    }
    if (reasons.length === 0) continue;
    let command: string;
    try {
      command = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim();
    } catch {
      continue; // gone meanwhile
    }
    if (command === '') continue; // a zombie, reaped by its parent
    found.push({ pid, why: reasons.join(', '), command });
  }
  return found;
}

function describeHandles(): string[] {
  const getHandles = (process as unknown as { _getActiveHandles?: () => unknown[] })._getActiveHandles;
  const handles = getHandles ? getHandles.call(process) : [];
  return handles
    .filter((h) => h !== process.stdout && h !== process.stderr && h !== process.stdin)
    .map((h) => {
      const ctor = (h as { constructor?: { name?: string } }).constructor?.name ?? typeof h;
      const pid = (h as { pid?: number }).pid;
      const spawnargs = (h as { spawnargs?: string[] }).spawnargs;
      return pid !== undefined ? `${ctor} pid ${pid}: ${(spawnargs ?? []).join(' ')}` : ctor;
    });
}

/** Leftovers still alive after `graceMs`: what a test's own asynchronous cleanup ends meanwhile is not one. */
async function lastingLeftovers(graceMs: number): Promise<Leftover[]> {
  const deadline = Date.now() + graceMs;
  let found = leftoverProcesses();
  while (found.length > 0 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    found = leftoverProcesses();
  }
  return found;
}

export default async function globalTeardown(): Promise<void> {
  // If something still holds this process open, say what and end instead of hanging CI.
  setTimeout(() => {
    process.stderr.write(
      `jest did not exit 20 s after the last suite; open handles:\n  ${describeHandles().join('\n  ')}\n`,
    );
    process.exit(1);
  }, 20000).unref();

  const leftovers = await lastingLeftovers(5000);
  if (leftovers.length === 0) return;
  for (const { pid } of leftovers) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  throw new Error(
    `processes a test started outlived the run (killed now):\n${leftovers
      .map((p) => `  pid ${p.pid} (${p.why}): ${p.command}`)
      .join('\n')}`,
  );
}
