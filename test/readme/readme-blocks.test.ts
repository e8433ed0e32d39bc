/**
 * README.md's code blocks stay true. Every ```js/```ts/```sh block carries a marker in the README
 * source, an HTML comment on the line above it:
 *   <!-- readme-test: example FILE -->             FILE holds the block between README:begin and
 *                                                  README:end (compared line by line, indentation
 *                                                  aside) and is run here (exit 0, last line 'ok');
 *   <!-- readme-test: skip (WHY); see FILE... -->  not runnable as it is (two hosts, the registry,
 *                                                  minutes); each FILE is the test that covers it.
 * The skipped blocks must be exactly SKIPPED below, so a new skip is a visible change here.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

const ROOT = path.join(__dirname, '..', '..');
const README = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
const CODE = new Set(['js', 'javascript', 'ts', 'typescript', 'sh', 'bash', 'shell']);

/** First lines of the blocks the README marks as skipped. */
const SKIPPED = [
  'npm install node-criu',
  'npm_config_build_from_source=true npm install node-criu   # or: npm install --build-from-source',
  'npm install          # builds vendor/libsoccr and the addon from source (compiler), compiles TypeScript to dist/',
  'npx node-criu dump --pid "$PID" --images-dir ./snap --leave-running   # a snapshot; the process runs on',
  'sudo node examples/aedes-process/run.js          # 20 publishers, one message each every 20 ms',
  'node-criu agent --listen 10.0.0.2:7100 --cert agent.pem --key agent-key.pem --ca ca.pem \\',
  'node-criu migrate --pid 1234 --to 10.0.0.2:7100 --cert source.pem --key source-key.pem --ca ca.pem \\',
  '// on B (the successor server)',
];

/** Examples another test already runs as they are (the README test only compares their text). */
const RUN_ELSEWHERE: Record<string, string> = {
  'examples/aedes-process/run.js': 'test/readme/aedes-process.test.ts',
  'examples/http-keepalive/server.js': 'test/examples/http-keepalive.test.ts',
  'examples/ws-chat/server.js': 'test/ws/ws-chat-example.test.ts',
};

interface Block {
  lang: string;
  body: string;
  marker: string | undefined;
  line: number;
}

function codeBlocks(markdown: string): Block[] {
  const lines = markdown.split('\n');
  const blocks: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^```(\S*)\s*$/.exec(lines[i]);
    if (!open) continue;
    let end = i + 1;
    while (end < lines.length && lines[end] !== '```') end++;
    const previous = lines[i - 1] ?? '';
    const marker = /^<!-- readme-test: (.*) -->$/.exec(previous)?.[1];
    blocks.push({ lang: open[1], body: lines.slice(i + 1, end).join('\n'), marker, line: i + 1 });
    i = end;
  }
  return blocks;
}

/** Lines without their indentation, trailing blank lines dropped: how a block compares to its example. */
const normalize = (text: string): string =>
  text
    .split('\n')
    .map((l) => l.trim())
    .join('\n')
    .trim();

/** The text between `// README:begin` (or `# README:begin`) and the matching end marker in `file`. */
function readmeSection(file: string): string {
  const lines = fs.readFileSync(file, 'utf8').split('\n');
  const begin = lines.findIndex((l) => /^\s*(\/\/|#) README:begin\s*$/.test(l));
  const end = lines.findIndex((l) => /^\s*(\/\/|#) README:end\s*$/.test(l));
  if (begin < 0 || end < begin) throw new Error(`${file} has no README:begin/README:end section`);
  return lines.slice(begin + 1, end).join('\n');
}

function runExample(file: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [file], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

const blocks = codeBlocks(README).filter((b) => CODE.has(b.lang));
const examples = blocks.filter((b) => b.marker?.startsWith('example '));
const exampleFile = (b: Block): string => (b.marker as string).slice('example '.length).trim();

describe('README.md code blocks', () => {
  it('every code block is marked: an example that runs it, or a skip naming the test that covers it', () => {
    expect(blocks.length).toBeGreaterThan(10);
    const unmarked = blocks.filter(
      (b) => b.marker === undefined || !/^(example \S+|skip \(.+\); see \S.*)$/.test(b.marker),
    );
    expect(unmarked.map((b) => `line ${b.line}: ${b.body.split('\n')[0]}`)).toEqual([]);
  });

  it('the skipped blocks are exactly the expected ones, and each names test files that exist', () => {
    const skipped = blocks.filter((b) => b.marker?.startsWith('skip '));
    expect(skipped.map((b) => b.body.split('\n')[0]).sort()).toEqual([...SKIPPED].sort());
    for (const block of skipped) {
      const files = (block.marker as string).replace(/^.*; see /, '').split(/\s+/);
      for (const file of files)
        expect({ file, exists: fs.existsSync(path.join(ROOT, file)) }).toEqual({ file, exists: true });
    }
  });

  it.each(examples.map((b) => [exampleFile(b), b] as const))(
    '%s holds the block as the README shows it',
    (file, block) => {
      expect(normalize(readmeSection(path.join(ROOT, file)))).toBe(normalize(block.body));
    },
  );

  it('every `npm run` script the README names exists', () => {
    const scripts = (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { scripts: object })
      .scripts;
    const named = [...README.matchAll(/npm run ([\w:-]+)/g)].map((m) => m[1]);
    expect(named.length).toBeGreaterThan(3);
    expect(named.filter((name) => !(name in scripts))).toEqual([]);
  });

  const runnable = [...new Set(examples.map(exampleFile))].filter((file) => !(file in RUN_ELSEWHERE));
  it.each(runnable)(
    '%s runs as it is: exit 0, ok',
    async (file) => {
      const run = await runExample(path.join(ROOT, file));
      expect({ code: run.code, last: run.stdout.trim().split('\n').pop() }).toEqual({ code: 0, last: 'ok' });
    },
    300000,
  );

  it.each(Object.entries(RUN_ELSEWHERE))('%s is run as it is by %s', (file, test) => {
    expect(fs.readFileSync(path.join(ROOT, test), 'utf8')).toContain(file.replace(/^examples\//, ''));
  });
});
