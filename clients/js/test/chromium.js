// @ts-check
// Debian's Chromium driven by playwright-core (which brings no browser of its own), as
// interop/js/test/chromium.js does it (copied, not imported). interop/js/install-chromium.sh
// installs it when missing; when it could not, the browser test skips with the reason.

import { access, constants, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

/** The browser: TERN_CHROMIUM, else Debian's package's path. */
export const CHROMIUM = process.env.TERN_CHROMIUM ?? "/usr/bin/chromium";

// No network beyond loopback here: keep Chromium from reaching for updates, sync and QUIC.
const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** @returns {Promise<string | false>} why the browser test cannot run, or false */
export async function chromiumMissing() {
  try {
    await access(CHROMIUM, constants.X_OK);
    return false;
  } catch {
    return `no Chromium at ${CHROMIUM}: run interop/js/install-chromium.sh as root (apt-get install chromium), or set TERN_CHROMIUM`;
  }
}

/** Starts Chromium headless with a fresh profile, removed by `close`. */
export async function launchChromium() {
  const profile = await mkdtemp(join(tmpdir(), "tern-client-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
    timeout: 30_000,
  });
  return {
    context,
    close: async () => {
      await context.close();
      await rm(profile, { recursive: true, force: true });
    },
  };
}
