#!/usr/bin/env bash
# test.sh — the whole test suite: unit tests, then the kernel tests (serial, real kernel), then a
# check that nothing was left on the host.
set -euo pipefail
cd "$(dirname "$0")/.."
npx vitest run --project unit
npx vitest run --project kernel
