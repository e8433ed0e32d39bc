/**
 * Picks the lines of a CRIU log that explain a failure. CRIU's cr_errmsg is its FIRST "Error" line,
 * which is often harmless (here always "Can't setup RLIMIT_NOFILE for self", logged at start-up
 * and ignored by CRIU), and every failed run ends with a summary ("Dumping FAILED.") that names
 * no cause. What is left says what went wrong: the first such line is the cause, the ones after it
 * mostly its consequences ("Unable to open fd=N", "N exited, status=1").
 */
import { getSystemErrorMap } from 'node:util';

/** Error lines CRIU logs on runs that succeed as well: never the reason for a failure. */
const HARMLESS = [/Can't setup RLIMIT_NOFILE/];

/** The last line of every failed run: says that it failed, not why. */
const SUMMARY = /:\s*(Dumping|Pre-dumping|Restoring|Checking|Lazy pages?)\b.*FAILED\.?\s*$/i;

const ERROR_LINE = /\b(Error|Warn)\s*\(/;

interface LogLine {
  level: 'Error' | 'Warn';
  /** The line without its "(00.354345) " timestamp. */
  text: string;
}

function parseLines(log: string): LogLine[] {
  const lines: LogLine[] = [];
  for (const raw of log.split('\n')) {
    const match = ERROR_LINE.exec(raw);
    if (!match) continue;
    const text = raw.replace(/^\(\s*[\d.]+\)\s*/, '').trim();
    if (HARMLESS.some((pattern) => pattern.test(text)) || SUMMARY.test(text)) continue;
    lines.push({ level: match[1] as 'Error' | 'Warn', text });
  }
  return lines;
}

/** Whether CRIU considers `line` noise on every run (so it never explains a failure). */
export function isHarmlessCriuLine(line: string): boolean {
  return HARMLESS.some((pattern) => pattern.test(line));
}

/** strerror-like text of a positive errno ('no such process' for 3), lowercased, if Node knows it. */
function errnoText(errno: number | undefined): string | undefined {
  if (errno === undefined || errno <= 0) return undefined;
  return getSystemErrorMap().get(-errno)?.[1]?.toLowerCase();
}

/**
 * CRIU's real Error lines in `log` (timestamps stripped), without the harmless ones and the final
 * "... FAILED." summary, in log order.
 */
export function criuErrorLines(log: string): string[] {
  return parseLines(log)
    .filter((line) => line.level === 'Error')
    .map((line) => line.text);
}

/**
 * The line that best explains a failed CRIU request, or undefined when the log says nothing
 * useful: the last Error (else Warn) line naming cr_errno's text (e.g. "No such process" for
 * ESRCH), else the first real Error line (the cause; later ones are its consequences), else a
 * cr_errmsg that is not one of the harmless lines.
 */
export function mostRelevantCriuError(source: {
  log?: string;
  crErrno?: number;
  crErrmsg?: string;
}): string | undefined {
  const lines = parseLines(source.log ?? '');
  const errorText = errnoText(source.crErrno);
  if (errorText !== undefined) {
    for (const level of ['Error', 'Warn'] as const) {
      const naming = lines.filter((line) => line.level === level && line.text.toLowerCase().includes(errorText));
      if (naming.length > 0) return naming[naming.length - 1].text;
    }
  }
  const firstError = lines.find((line) => line.level === 'Error');
  if (firstError !== undefined) return firstError.text;
  const message = source.crErrmsg?.trim();
  return message && !isHarmlessCriuLine(message) ? message : undefined;
}
