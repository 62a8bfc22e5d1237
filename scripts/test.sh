#!/usr/bin/env bash
# test.sh — the whole test suite: formatting check, type-check of sources and tests, unit tests, then the kernel tests
# (one file after another, real kernel), which end with a check that nothing was left on the host.
set -euo pipefail
cd "$(dirname "$0")/.."
npx prettier --check . >/dev/null || { npx prettier --list-different .; echo 'test: files above are not formatted (run npx prettier --write .)' >&2; exit 1; }
npx tsc -p tsconfig.test.json
npx vitest run --project unit
npx vitest run --project kernel
