// ESLint (flat config): the recommended JavaScript rules plus a few that catch real
// mistakes in asynchronous code. Formatting is prettier's, not ESLint's.
//
// `npm run lint` runs it from the repository root with `--config` (so the web chat example,
// outside this folder, is inside its base path); the patterns below also match from here.

import js from "@eslint/js";
import globals from "globals";
import tseslint from "typescript-eslint";

export default [
  { ignores: ["**/node_modules/"] },
  js.configs.recommended,
  {
    languageOptions: {
      ecmaVersion: 2022,
      sourceType: "module",
      globals: { ...globals.node },
    },
    linterOptions: { reportUnusedDisableDirectives: "error" },
    rules: {
      eqeqeq: "error",
      "no-var": "error",
      "prefer-const": "error",
      "no-await-in-loop": "off",
      "no-promise-executor-return": "error",
      "require-atomic-updates": "off",
      "no-unused-vars": ["error", { argsIgnorePattern: "^_" }],
      "no-shadow": "error",
      "no-throw-literal": "error",
      "prefer-promise-reject-errors": "error",
      "no-return-await": "off",
    },
  },
  {
    // Type-aware rules for promises, from the same types tsc checks: a promise nobody
    // awaits hides a failure, and one passed where a plain callback is expected is not
    // waited for.
    files: ["**/*.js", "**/*.mjs"],
    languageOptions: {
      parser: tseslint.parser,
      parserOptions: { project: "./tsconfig.json", tsconfigRootDir: import.meta.dirname },
    },
    plugins: { "@typescript-eslint": tseslint.plugin },
    rules: {
      "@typescript-eslint/no-floating-promises": [
        "error",
        {
          // node:test's test() and describe() return promises the runner itself awaits.
          allowForKnownSafeCalls: [
            { from: "package", package: "node:test", name: ["test", "describe", "it", "suite"] },
          ],
        },
      ],
      "@typescript-eslint/no-misused-promises": "error",
      "@typescript-eslint/await-thenable": "error",
    },
  },
  {
    // Scripts that run in the browser.
    files: ["**/test/browser/**/*.js", "**/examples/web-chat/*.js"],
    languageOptions: { globals: { ...globals.browser } },
  },
];
