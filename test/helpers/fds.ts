/**
 * fd-leak checks by identity, not by count: jest runs several suites in one worker, and an earlier
 * suite's fds may still be closing while a later test runs, so a count can drop under a test that
 * leaked nothing. A snapshot maps each fd to its readlink target; what a test left open is every fd
 * whose target was not there before.
 */
import * as fs from 'node:fs';

export type FdSnapshot = Map<number, string>;

/** Our open fds and what each refers to. */
export function openFds(): FdSnapshot {
  const fds: FdSnapshot = new Map();
  for (const entry of fs.readdirSync('/proc/self/fd')) {
    try {
      fds.set(Number(entry), fs.readlinkSync(`/proc/self/fd/${entry}`));
    } catch {
      // the directory fd readdir used, or closed meanwhile
    }
  }
  return fds;
}

/** fds open now that were not (with the same target) in `before`: what a test left open. */
export function newFds(before: FdSnapshot): string[] {
  return [...openFds()].filter(([fd, target]) => before.get(fd) !== target).map(([fd, target]) => `${fd} -> ${target}`);
}

/** fds in `before` that are still open with the same target. */
export function stillOpen(before: FdSnapshot, fds: readonly number[]): number[] {
  const now = openFds();
  return fds.filter((fd) => now.get(fd) !== undefined && now.get(fd) === before.get(fd));
}
