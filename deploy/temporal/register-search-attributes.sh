#!/bin/sh
# One-shot, idempotent: registers the custom search attributes every imprun
# workflow sets, so runs can be found in the Temporal Web UI by tenant,
# cluster, product and publish. Run by the `temporal-admin-tools` compose
# service after the server is healthy. Re-running it is a no-op.
set -eu

NAMESPACE="${TEMPORAL_NAMESPACE:-default}"
ATTRIBUTES="TenantId ClusterId ProductId PublishId RolloutId"

# auto-setup creates the namespace in the background after the frontend
# reports SERVING, so wait for it rather than racing it.
tries=0
until temporal operator namespace describe --namespace "$NAMESPACE" >/dev/null 2>&1; do
  tries=$((tries + 1))
  if [ "$tries" -ge 90 ]; then
    echo "namespace $NAMESPACE did not appear within 3 minutes" >&2
    exit 1
  fi
  echo "waiting for namespace $NAMESPACE ..."
  sleep 2
done

existing="$(temporal operator search-attribute list --namespace "$NAMESPACE")"
for name in $ATTRIBUTES; do
  if printf '%s\n' "$existing" | grep -qw "$name"; then
    echo "search attribute $name already registered"
    continue
  fi
  echo "registering search attribute $name (Keyword)"
  temporal operator search-attribute create --namespace "$NAMESPACE" \
    --name "$name" --type Keyword
done

temporal operator search-attribute list --namespace "$NAMESPACE"
