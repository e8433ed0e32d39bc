/**
 * `ws` is an optional peer dependency: node-criu/ws loads it on first use and says what is
 * missing (ERR_WS_NOT_INSTALLED) when it is not installed. (lib/index.ts never imports lib/ws.)
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

jest.mock('ws', () => {
  throw Object.assign(new Error("Cannot find module 'ws'"), { code: 'MODULE_NOT_FOUND' });
});

it('without ws, using node-criu/ws gives ERR_WS_NOT_INSTALLED', async () => {
  const { wsModule } = await import('../../../lib/ws/load');
  expect(() => wsModule()).toThrow(
    expect.objectContaining({ name: 'WebSocketHandoverError', code: 'ERR_WS_NOT_INSTALLED' }),
  );
});

it('nothing outside lib/ws imports ws or lib/ws', () => {
  const offenders: string[] = [];
  const walk = (dir: string): void => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const file = path.join(dir, entry.name);
      if (entry.isDirectory()) {
        if (entry.name !== 'ws' && entry.name !== 'generated') walk(file);
      } else if (
        file.endsWith('.ts') &&
        /from '(ws|\.\.?\/(\.\.\/)*ws(\/[a-z-]+)?)'|require\('ws'\)/.test(fs.readFileSync(file, 'utf8'))
      ) {
        offenders.push(file);
      }
    }
  };
  walk(path.join(__dirname, '..', '..', '..', 'lib'));
  expect(offenders).toEqual([]);
});
