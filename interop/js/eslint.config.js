// ESLint (flat config): the recommended JavaScript rules plus a few that catch real
// mistakes in asynchronous test code. Formatting is prettier's, not ESLint's.

import js from "@eslint/js";
import globals from "globals";

export default [
  { ignores: ["node_modules/"] },
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
    // Scripts that run in the browser.
    files: ["test/browser/**/*.js"],
    languageOptions: { globals: { ...globals.browser } },
  },
];
