#!/usr/bin/env bash
# Regenerates the committed REST client (client/client.gen.go) from http/openapi.yaml with the
# pinned oapi-codegen, or with `check` regenerates it into a temporary directory and fails when
# the committed code differs (the document changed without `make client`).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

# Keep in step with scripts/tools.sh, which installs this version into bin/.
OAPI_CODEGEN_VERSION=2.8.2
gen=${OAPI_CODEGEN:-$root/bin/oapi-codegen}

if ! go version -m "$gen" 2>/dev/null |
  grep -E "^[[:space:]]+mod[[:space:]]+github.com/oapi-codegen/oapi-codegen/v2[[:space:]]+v${OAPI_CODEGEN_VERSION}[[:space:]]" >/dev/null; then
  echo "client.sh: $gen is not oapi-codegen v${OAPI_CODEGEN_VERSION}; run scripts/tools.sh" >&2
  exit 1
fi

case "${1:-generate}" in
generate)
  (cd client && "$gen" -config oapi-codegen.yaml ../http/openapi.yaml)
  ;;
check)
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  cp client/oapi-codegen.yaml "$tmp/"
  (cd "$tmp" && "$gen" -config oapi-codegen.yaml "$root/http/openapi.yaml")
  if ! diff -u client/client.gen.go "$tmp/client.gen.go" >"$tmp/diff"; then
    head -50 "$tmp/diff" >&2
    echo "client.sh: client/client.gen.go is out of date with http/openapi.yaml; run make client" >&2
    exit 1
  fi
  ;;
*)
  echo "usage: scripts/client.sh [generate|check]" >&2
  exit 2
  ;;
esac
