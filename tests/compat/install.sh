#!/usr/bin/env bash
# Installs the official Iron client libraries (npm) for the compat suite,
# once: the versions are pinned in package.json / package-lock.json.
set -euo pipefail
cd "$(dirname "$0")"
[[ -f node_modules/iron_mq/package.json && -f node_modules/iron_worker/package.json ]] && exit 0
npm ci --no-audit --no-fund --loglevel=error
