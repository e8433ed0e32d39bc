/**
 * The freezer cgroup CRIU's `freezeCgroup` option names (a directory under the cgroup mount): CRIU
 * freezes it for the dump and thaws it when it unwinds, so a CRIU that dies mid-dump leaves it
 * frozen. cgroup v1's freezer has `freezer.state` (FROZEN/FREEZING/THAWED), v2 `cgroup.freeze`
 * (1/0).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

function readTrimmed(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** Whether the cgroup is frozen (or freezing); undefined when it is no freezer cgroup we can read. */
export function cgroupFrozen(cgroup: string): boolean | undefined {
  const v1 = readTrimmed(path.join(cgroup, 'freezer.state'));
  if (v1 !== undefined) return v1 !== 'THAWED';
  const v2 = readTrimmed(path.join(cgroup, 'cgroup.freeze'));
  if (v2 !== undefined) return v2 !== '0';
  return undefined;
}

/** Thaws the cgroup; throws (with the path) when it cannot. */
export function thawCgroup(cgroup: string): void {
  const v1 = path.join(cgroup, 'freezer.state');
  if (fs.existsSync(v1)) fs.writeFileSync(v1, 'THAWED');
  else fs.writeFileSync(path.join(cgroup, 'cgroup.freeze'), '0');
}
