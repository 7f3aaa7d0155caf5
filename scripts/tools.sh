#!/usr/bin/env bash
# Installs the tools that `make run` and `make test` need and that a Debian machine with only Go
# does not have: PostgreSQL server binaries, protoc, docker-compose, nginx (the agent's tests run
# `nginx -t` on every rendered nginx configuration) and the Temporal CLI (which embeds the dev
# server and its Web UI). Safe to run any number of times; silent when everything
# is already there, so `make test` can call it unconditionally.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

# Keep in step with ARCHITECTURE.md: v1.5.1 is the newest CLI that installs with `go install`.
TEMPORAL_CLI_VERSION=1.5.1

mkdir -p "$root/bin"

# Test binaries run this script while holding the same lock themselves (testharness sets
# TOOLS_SH_LOCK_HELD); everyone else takes it here, so two parallel callers never run apt-get or
# the six-minute Temporal build at the same time.
if [[ -z "${TOOLS_SH_LOCK_HELD:-}" ]] && command -v flock >/dev/null; then
  exec 9>"$root/bin/.tools.lock"
  flock 9
fi

log() { printf 'tools.sh: %s\n' "$*" >&2; }

as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null; then
    sudo "$@"
  else
    log "need root (or sudo) to run: $*"
    exit 1
  fi
}

apt_updated=
apt_install() {
  log "installing Debian packages: $*"
  if [[ -z $apt_updated ]]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# make is in most Go images but not guaranteed; .ci/run calls this script before `make test`.
command -v make >/dev/null || apt_install make

if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
  # The Debian package would create and start a system-wide "main" cluster on 5432; the project
  # runs its own clusters (`make run`, testharness), so switch that off before installing.
  as_root mkdir -p /etc/postgresql-common/createcluster.d
  echo 'create_main_cluster = false' |
    as_root tee /etc/postgresql-common/createcluster.d/imprun-no-main-cluster.conf >/dev/null
  apt_install postgresql
fi

command -v protoc >/dev/null || apt_install protobuf-compiler
command -v docker-compose >/dev/null || apt_install docker-compose

# The agent runs its own nginx (its tests and `make demo` start it on loopback ports); Debian's
# package also enables and starts a system nginx on port 80 where an init system runs, which
# nothing here uses. nginx lives in
# /usr/sbin, which a non-root PATH may lack, so look there too.
if ! command -v nginx >/dev/null && [[ ! -x /usr/sbin/nginx ]]; then
  apt_install nginx
fi
# The agent's nginx data plane loads headers-more (when present) to clear every client-sent
# X-Imprun-* request header before it reaches a backend; the gateway tests check that it does.
if [[ ! -f /usr/lib/nginx/modules/ngx_http_headers_more_filter_module.so ]]; then
  apt_install libnginx-mod-http-headers-more-filter
fi
# Rendered nginx configuration verifies https backends against the system CA bundle, which
# `nginx -t` opens.
[[ -f /etc/ssl/certs/ca-certificates.crt ]] || apt_install ca-certificates

# runuser starts the dev Postgres as the postgres user when we are root; util-linux ships it and
# is essential on Debian, but check rather than fail obscurely later.
if [[ $(id -u) -eq 0 ]] && ! command -v runuser >/dev/null; then
  apt_install util-linux
fi

# `temporal --version` says 0.0.0-DEV for a `go install` build (the release version is set by
# the release tooling), so read the module version recorded in the binary instead.
temporal_ok() {
  [[ -x "$root/bin/temporal" ]] &&
    go version -m "$root/bin/temporal" 2>/dev/null |
    grep -E "^[[:space:]]+mod[[:space:]]+github.com/temporalio/cli[[:space:]]+v${TEMPORAL_CLI_VERSION}[[:space:]]" >/dev/null
}
if ! temporal_ok; then
  log "building Temporal CLI v${TEMPORAL_CLI_VERSION} into bin/temporal (takes several minutes the first time)"
  GOBIN="$root/bin" go install "github.com/temporalio/cli/cmd/temporal@v${TEMPORAL_CLI_VERSION}"
  temporal_ok || { log "bin/temporal is not v${TEMPORAL_CLI_VERSION} after go install"; exit 1; }
fi

# oapi-codegen generates the committed REST client (client/) that imprunctl is built on;
# `make test` regenerates it to check it still matches http/openapi.yaml. Keep in step with
# scripts/client.sh.
OAPI_CODEGEN_VERSION=2.8.2
oapi_codegen_ok() {
  [[ -x "$root/bin/oapi-codegen" ]] &&
    go version -m "$root/bin/oapi-codegen" 2>/dev/null |
    grep -E "^[[:space:]]+mod[[:space:]]+github.com/oapi-codegen/oapi-codegen/v2[[:space:]]+v${OAPI_CODEGEN_VERSION}[[:space:]]" >/dev/null
}
if ! oapi_codegen_ok; then
  log "building oapi-codegen v${OAPI_CODEGEN_VERSION} into bin/oapi-codegen"
  GOBIN="$root/bin" go install "github.com/oapi-codegen/oapi-codegen/v2/cmd/oapi-codegen@v${OAPI_CODEGEN_VERSION}"
  oapi_codegen_ok || { log "bin/oapi-codegen is not v${OAPI_CODEGEN_VERSION} after go install"; exit 1; }
fi
