#!/usr/bin/env bash
# Regenerates the Kubernetes JSON Schemas that scripts/lint-deploy.sh validates deploy/agent/
# against (deploy/kubernetes-schemas/, committed, so `make test` downloads nothing).
#
#   scripts/k8s-schemas.sh
#
# The source is the OpenAPI document of one pinned Kubernetes release,
# api/openapi-spec/swagger.json in the Go module k8s.io/kubernetes (about 19 MB through the Go
# module proxy, checked against the checksum database like any module), converted by
# scripts/k8sschemas. Bump K8S_VERSION here and in scripts/lint-deploy.sh together; add a kind
# to KINDS when deploy/agent/ gains one.
set -euo pipefail

K8S_VERSION=1.35.4
KINDS=(Namespace:v1 ServiceAccount:v1 Secret:v1 PersistentVolumeClaim:v1 Service:v1 Deployment:apps/v1)

cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="deploy/kubernetes-schemas/v${K8S_VERSION}-standalone-strict"

# Outside the project's module, so k8s.io/kubernetes never enters go.mod.
dir=$(cd "$(mktemp -d)" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@v${K8S_VERSION}" |
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
swagger="$dir/api/openapi-spec/swagger.json"
[[ -f $swagger ]] || { echo "k8s-schemas.sh: no $swagger" >&2; exit 1; }

rm -rf "$out"
go run ./scripts/k8sschemas -swagger "$swagger" -out "$out" "${KINDS[@]}"
