/** /proc/<pid>/stat, read the one way every caller needs (process locks, CRIU recovery, migration). */
import * as fs from 'node:fs';

/**
 * The fields of /proc/<pid>/stat from field 3 (state) on: field N is `[N - 3]` (state `[0]`, start
 * time in clock ticks since boot `[19]`, exit code `[49]`). The command name (field 2) may hold
 * spaces and parentheses, so the fields are those after its last ')'. Undefined when there is no
 * such process; other read errors are thrown.
 */
export function procStatFields(pid: number | 'self'): string[] | undefined {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ESRCH') return undefined;
    throw error;
  }
  return text.slice(text.lastIndexOf(')') + 2).split(' ');
}
