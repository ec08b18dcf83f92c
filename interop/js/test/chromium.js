// Debian's Chromium, driven by playwright-core (which brings no browser of its own).
//
// `./install-chromium.sh` installs it when missing; when it could not (not root, no apt, no
// network), `launchChromium` says why and the browser tests skip themselves with that reason.

import { access, constants, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

/** The browser: TERN_CHROMIUM, else Debian's package's path. */
export const CHROMIUM = process.env.TERN_CHROMIUM ?? "/usr/bin/chromium";

// This machine's network is closed: without the background-networking flags Chromium spends
// its time on (and trips over) updates, sync and QUIC probes it cannot reach.
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

/**
 * Why the browser tests cannot run here, or false when Chromium is there to run them.
 * @returns {Promise<string | false>}
 */
export async function chromiumMissing() {
  try {
    await access(CHROMIUM, constants.X_OK);
    return false;
  } catch {
    return `no Chromium at ${CHROMIUM}: run interop/js/install-chromium.sh as root (apt-get install chromium), or set TERN_CHROMIUM`;
  }
}

/**
 * Starts Chromium headless with a fresh profile directory, removed again by `close`.
 * `ignoreHTTPSErrors` lets its pages reach a wss:// server with a self-signed certificate.
 * @param {{ ignoreHTTPSErrors?: boolean }} [options]
 * @returns {Promise<{ context: import("playwright-core").BrowserContext, close: () => Promise<void> }>}
 */
export async function launchChromium(options = {}) {
  const profile = await mkdtemp(join(tmpdir(), "tern-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
    viewport: { width: 640, height: 720 },
    ignoreHTTPSErrors: options.ignoreHTTPSErrors ?? false,
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

/**
 * Collects a page's console lines and uncaught errors, to say what went wrong in it when a
 * test fails.
 * @param {import("playwright-core").Page} page
 * @returns {() => string}
 */
export function pageLog(page) {
  /** @type {string[]} */
  const lines = [];
  page.on("console", (msg) => lines.push(`console.${msg.type()}: ${msg.text()}`));
  page.on("pageerror", (error) => lines.push(`pageerror: ${error.message}`));
  return () => lines.join("\n");
}
