# The TypeScript client's suite (clients/js): included from the top Makefile.
#
# `make test-client-js`: installs the exact-pinned dev dependencies from package-lock.json
# (again only when the lock file changed), builds ternd, installs Debian's Chromium for the
# browser test when missing (interop/js/install-chromium.sh: skipped, with the reason, when
# it cannot), then `npm test`: prettier, the ESM build (the examples and the bench import
# it), eslint, tsc --noEmit, node --test.

CARGO ?= cargo
# The top Makefile's: how target/debug/ternd is made (not at all under `make test`).
BUILD_TERND ?= $(CARGO) build -p tern-broker --bin ternd
CLIENT_JS_DIR := clients/js

$(CLIENT_JS_DIR)/node_modules/.installed: $(CLIENT_JS_DIR)/package-lock.json
	cd $(CLIENT_JS_DIR) && npm ci --no-audit --no-fund
	touch $@

.PHONY: test-client-js
## test-client-js: the TypeScript client (clients/js): format, lint, typecheck, build, tests against ternd (TCP, WebSocket, Chromium)
test-client-js: $(CLIENT_JS_DIR)/node_modules/.installed
	$(BUILD_TERND)
	interop/js/install-chromium.sh
	cd $(CLIENT_JS_DIR) && npm test
