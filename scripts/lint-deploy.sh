#!/usr/bin/env bash
# Validates the Kubernetes manifests of deploy/agent/ with kubeconform against the JSON Schemas
# of one pinned Kubernetes release, committed in deploy/kubernetes-schemas/ (made by
# scripts/k8s-schemas.sh; see deploy/kubernetes-schemas/README.md for where they come from).
# -strict refuses fields a schema does not name and duplicate keys; a kind without a schema
# there fails too (no -ignore-missing-schemas), as does a wrong apiVersion.
#
#   scripts/lint-deploy.sh
#
# kubeconform is pinned in scripts/tools.sh and installed into .tools/bin (called here; a no-op
# when it is there). Only local files are read: kubeconform's default schema location is not
# used.
set -euo pipefail

# Keep in step with K8S_VERSION in scripts/k8s-schemas.sh.
K8S_VERSION=1.35.4

cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/tools.sh checks

exec .tools/bin/kubeconform -strict -summary \
  -kubernetes-version "$K8S_VERSION" \
  -schema-location 'deploy/kubernetes-schemas/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json' \
  deploy/agent/
