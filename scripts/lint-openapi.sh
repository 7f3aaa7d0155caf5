#!/usr/bin/env bash
# Lints the OpenAPI document (http/openapi.yaml) with Redocly CLI and its recommended rules
# (redocly.yaml: recommended-strict, so a warning fails as an error does), so the document stays
# one that generated clients and other tooling accept. The HTTP and end-to-end tests check the
# other direction: every response the server sends matches the document.
#
#   scripts/lint-openapi.sh
#
# Redocly CLI is pinned in scripts/node/package-lock.json and installed into .tools/node by
# scripts/tools.sh (called here; a no-op when it is there). Nothing is downloaded at run time.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/tools.sh checks

# Offline: no usage report (also off in redocly.yaml), no check for a newer version.
export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true
# --max-problems: list every problem, not the first hundred.
exec .tools/node/node_modules/.bin/redocly lint --config redocly.yaml --max-problems 10000 imprun
