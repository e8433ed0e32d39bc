'use strict';
/**
 * The unit tier: pure logic only (codecs, options, framing, keys, argument parsing, validation).
 * No root, no kernel features, no global setup: it runs as any user, in seconds.
 */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test/unit'],
  testMatch: ['**/*.test.ts'],
  transform: {
    // Transpile only: `npm run typecheck` checks the types; type-checking each file here would
    // take most of the tier's time.
    '^.+\\.ts$': ['ts-jest', { tsconfig: { ...require('./tsconfig.json').compilerOptions, isolatedModules: true } }],
  },
  // Every core: the files share nothing (jest's default leaves one core to itself).
  maxWorkers: '100%',
  testTimeout: 30000,
};
