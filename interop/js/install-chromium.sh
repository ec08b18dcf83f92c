#!/usr/bin/env bash
# Installs Debian's headless-capable Chromium (package `chromium`, /usr/bin/chromium) for the
# browser test, when it is missing. The test drives it with playwright-core, which brings no
# browser of its own (and this machine could not download one). Needs root and apt-get; when
# either is missing, or the install fails, it says so and exits 0: the browser test then
# skips itself with the reason, and every other test still runs.
set -uo pipefail

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-chromium: no apt-get here; install Chromium at $CHROMIUM by hand for the browser test" >&2
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-chromium: not root; run 'apt-get install chromium' as root for the browser test" >&2
  exit 0
fi
echo "install-chromium: installing Debian's chromium (once; about 250 MB)" >&2
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; }; then
  echo "install-chromium: apt-get install chromium failed; the browser test will be skipped" >&2
fi
exit 0
