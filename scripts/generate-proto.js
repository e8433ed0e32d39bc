#!/usr/bin/env node
'use strict';
/**
 * `npm run generate:proto`: regenerates lib/generated/ from proto/*.proto with protobufjs-cli.
 * For each schema it writes
 *   <name>.json  the reflection descriptor (pbjs -t json) that the codecs load at run time;
 *   <name>.ts    its TypeScript types (pbjs -t static-module | pbts), trimmed to what is sound
 *                in a .ts file: the `$Properties` interfaces and the enums (real, with values).
 * pbts writes declarations for static classes the codecs never use (they validate through
 * reflection instead), so those classes and their deprecated `I<name>` aliases are dropped, and
 * each namespace becomes `declare` so its interfaces are exported as in a .d.ts.
 *
 * Usage: node scripts/generate-proto.js [output directory, default lib/generated]
 */
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { pbjs, pbts } = require('protobufjs-cli');

const ROOT = path.join(__dirname, '..');
const SCHEMAS = ['criu-rpc', 'connection-image'];

function run(tool, args, source) {
  return new Promise((resolve, reject) => {
    const done = (error, output) => (error ? reject(error) : resolve(output));
    if (source === undefined) tool.main(args, done);
    else tool.process(source, args, done);
  });
}

/** Keeps the interfaces and enums of pbts's output; see the header. */
function trimDeclarations(text, name) {
  const out = text
    // `class X { ... }` at any depth: its closing brace is the next line at the same indentation.
    .replace(/^( *)(?:export )?class \w+ \{\n[\s\S]*?\n\1\}\n\n?/gm, '')
    .replace(/^( *)(?:export )?interface I\w+ extends [\w.]+\.\$Properties \{\n\1\}\n\n?/gm, '')
    .replace(/^export namespace /gm, 'export declare namespace ')
    .replace(/^\/\/ DO NOT EDIT!.*\n/, '');
  if (/\bclass\b/.test(out)) throw new Error(`${name}: a class declaration survived trimming`);
  return `// Generated from proto/${name}.proto by \`npm run generate:proto\`. Do not edit.\n${out}`;
}

async function generate(outDir) {
  fs.mkdirSync(outDir, { recursive: true });
  for (const name of SCHEMAS) {
    const proto = path.join(ROOT, 'proto', `${name}.proto`);
    const json = await run(pbjs, ['-t', 'json', proto]);
    fs.writeFileSync(path.join(outDir, `${name}.json`), json.endsWith('\n') ? json : `${json}\n`);
    const staticCode = await run(pbjs, [
      '-t',
      'static-module',
      '-w',
      'commonjs',
      '--no-create',
      '--no-encode',
      '--no-decode',
      '--no-verify',
      '--no-convert',
      '--no-delimited',
      '--no-typeurl',
      '--no-service',
      proto,
    ]);
    // pbts reads a file; a private temporary directory keeps concurrent runs apart.
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'node-criu-proto-'));
    try {
      const staticFile = path.join(tmp, `${name}.js`);
      fs.writeFileSync(staticFile, staticCode);
      const declarations = await run(pbts, ['-m', '--no-comments', staticFile]);
      fs.writeFileSync(path.join(outDir, `${name}.ts`), trimDeclarations(declarations, name));
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  }
}

generate(path.resolve(process.argv[2] ?? path.join(ROOT, 'lib', 'generated'))).catch((error) => {
  console.error(`generate-proto: ${error.message}`);
  process.exit(1);
});
