/** lib/generated/ is exactly what `npm run generate:proto` makes from proto/ (it cannot drift). */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

const ROOT = path.join(__dirname, '..', '..', '..');
const COMMITTED = path.join(ROOT, 'lib', 'generated');

let fresh: string;

beforeAll(async () => {
  fresh = fs.mkdtempSync(path.join(os.tmpdir(), 'node-criu-generated-'));
  await promisify(execFile)(process.execPath, [path.join(ROOT, 'scripts', 'generate-proto.js'), fresh]);
}, 60_000);

afterAll(() => {
  fs.rmSync(fresh, { recursive: true, force: true });
});

it('regenerating yields exactly the committed files', () => {
  const names = fs.readdirSync(COMMITTED).sort();
  expect(fs.readdirSync(fresh).sort()).toEqual(names);
  expect(names).toEqual(['connection-image.json', 'connection-image.ts', 'criu-rpc.json', 'criu-rpc.ts']);
  for (const name of names) {
    expect({ name, text: fs.readFileSync(path.join(COMMITTED, name), 'utf8') }).toEqual({
      name,
      text: fs.readFileSync(path.join(fresh, name), 'utf8'),
    });
  }
});
