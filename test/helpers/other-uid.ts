/**
 * A copy of the built package that another uid (65534) can read. The checkout may sit under a
 * 0700 directory (root's clone in /root), where that uid cannot reach dist/ or the fixtures; the
 * copy goes to a fresh 0755 directory under the system temp dir and is removed by its dispose().
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const ROOT = path.join(__dirname, '..', '..');

export interface ReadableCopy {
  /** The copy's package root: dist/, build/Release/, package.json, the runtime node_modules. */
  root: string;
  /** Path of `relative` (e.g. 'dist/cli/main.js') inside the copy. */
  at(relative: string): string;
  dispose(): void;
}

/** Copies a package directory and its runtime dependencies (looked up from the checkout's root). */
function copyDependencies(names: string[], into: string, seen: Set<string>): void {
  for (const name of names) {
    if (seen.has(name)) continue;
    seen.add(name);
    const source = path.join(ROOT, 'node_modules', name);
    if (!fs.existsSync(source)) continue; // an optional dependency that is not installed
    const target = path.join(into, 'node_modules', name);
    fs.cpSync(source, target, { recursive: true, dereference: true });
    const manifest = JSON.parse(fs.readFileSync(path.join(source, 'package.json'), 'utf8')) as {
      dependencies?: Record<string, string>;
    };
    copyDependencies(Object.keys(manifest.dependencies ?? {}), into, seen);
  }
}

/** Makes every directory and file under `dir` readable (and directories searchable) by others. */
function openUp(dir: string): void {
  fs.chmodSync(dir, 0o755);
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) openUp(full);
    else if (entry.isFile()) fs.chmodSync(full, fs.statSync(full).mode | 0o444);
  }
}

/**
 * The package (and `fixtures`, files under test/fixtures/) copied where any uid can read them.
 * Fixtures keep their place relative to dist/, so `require('../../dist')` in them still works.
 */
export function readableCopy(fixtures: string[] = []): ReadableCopy {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'ncr-uid-'));
  const dispose = (): void => fs.rmSync(root, { recursive: true, force: true });
  try {
    fs.copyFileSync(path.join(ROOT, 'package.json'), path.join(root, 'package.json'));
    fs.cpSync(path.join(ROOT, 'dist'), path.join(root, 'dist'), { recursive: true, dereference: true });
    const addon = path.join(ROOT, 'build', 'Release', 'node_criu.node');
    fs.mkdirSync(path.join(root, 'build', 'Release'), { recursive: true });
    fs.copyFileSync(addon, path.join(root, 'build', 'Release', 'node_criu.node'));
    const manifest = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {
      dependencies?: Record<string, string>;
    };
    copyDependencies(Object.keys(manifest.dependencies ?? {}), root, new Set());
    for (const fixture of fixtures) {
      const target = path.join(root, 'test', 'fixtures', fixture);
      fs.mkdirSync(path.dirname(target), { recursive: true });
      fs.copyFileSync(path.join(ROOT, 'test', 'fixtures', fixture), target);
    }
    openUp(root);
  } catch (error) {
    dispose();
    throw error;
  }
  return { root, at: (relative) => path.join(root, relative), dispose };
}
