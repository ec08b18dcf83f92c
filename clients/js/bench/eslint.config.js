// The package's ESLint config for bench/, with bench/tsconfig.json as the type-aware project:
// the package's tsconfig.json does not include bench/ (the script is not part of `npm run
// typecheck` or the build). ESLint 10 uses the config nearest to each file it lints.

import base from "../eslint.config.js";

export default [
  ...base,
  {
    languageOptions: {
      parserOptions: { project: "./tsconfig.json", tsconfigRootDir: import.meta.dirname },
    },
  },
];
