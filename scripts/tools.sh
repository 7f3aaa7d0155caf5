#!/usr/bin/env bash
# Installs the tools that `make run` and `make test` need and that a Debian machine with only Go
# does not have: PostgreSQL server binaries, protoc, docker-compose, nginx (the agent's tests run
# `nginx -t` on every rendered nginx configuration), the Temporal CLI (which embeds the dev
# server and its Web UI), and the linters of the OpenAPI document and the Kubernetes manifests
# (Redocly CLI with Node.js and npm, kubeconform; into .tools/). Safe to run any number of
# times; silent when everything is already there, so `make test` can call it unconditionally.
#
#   scripts/tools.sh          everything
#   scripts/tools.sh checks   only the linters (what scripts/lint-openapi.sh and
#                             scripts/lint-deploy.sh need)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

# Keep in step with ARCHITECTURE.md: v1.5.1 is the newest CLI that installs with `go install`.
TEMPORAL_CLI_VERSION=1.5.1

mkdir -p "$root/bin"

# Test binaries run this script while holding the same lock themselves (testharness sets
# TOOLS_SH_LOCK_HELD); everyone else takes it here, so two parallel callers never run apt-get or
# the six-minute Temporal build at the same time. `checks` takes only the lock of .tools/.
if [[ ${1:-} != checks && -z "${TOOLS_SH_LOCK_HELD:-}" ]] && command -v flock >/dev/null; then
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

# Pinned versions of the linters. Redocly CLI's is in scripts/node/package.json (exact, with
# package-lock.json); 1.34.x runs on Debian bookworm's own nodejs (18), which the 2.x line
# (Node 20.19+) does not. kubeconform: see scripts/lint-deploy.sh for its schemas.
KUBECONFORM_VERSION=0.7.0

# The linters live in .tools/ (gitignored) and take their own lock, so a `scripts/tools.sh
# checks` never waits for a Temporal build that holds bin/.tools.lock.
install_checks() {
  mkdir -p "$root/.tools"
  local lockfd
  if command -v flock >/dev/null; then
    exec {lockfd}>"$root/.tools/.lock"
    flock "$lockfd"
  fi
  # Redocly CLI (scripts/lint-openapi.sh). Machines of the project's kind come with Node.js
  # and npm; a plain Debian machine gets Debian's.
  local pkgs=()
  command -v node >/dev/null || pkgs+=(nodejs)
  command -v npm >/dev/null || pkgs+=(npm)
  ((${#pkgs[@]} == 0)) || apt_install "${pkgs[@]}"
  local node_dir="$root/.tools/node"
  if ! cmp -s "$root/scripts/node/package-lock.json" "$node_dir/package-lock.json" ||
    [[ ! -x $node_dir/node_modules/.bin/redocly ]]; then
    log "installing the npm packages of scripts/node/package-lock.json (Redocly CLI) into .tools/node"
    rm -rf "$node_dir"
    mkdir -p "$node_dir"
    cp "$root/scripts/node/package.json" "$root/scripts/node/package-lock.json" "$node_dir/"
    # npm ci installs exactly the lock file; no package needs its install scripts.
    (cd "$node_dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
  fi
  # kubeconform (scripts/lint-deploy.sh).
  local kc="$root/.tools/bin/kubeconform"
  if ! { [[ -x $kc ]] && go version -m "$kc" 2>/dev/null |
    grep -E "^[[:space:]]+mod[[:space:]]+github.com/yannh/kubeconform[[:space:]]+v${KUBECONFORM_VERSION}[[:space:]]" >/dev/null; }; then
    log "installing kubeconform v${KUBECONFORM_VERSION} into .tools/bin"
    GOBIN="$root/.tools/bin" go install "github.com/yannh/kubeconform/cmd/kubeconform@v${KUBECONFORM_VERSION}"
  fi
  if [[ -n ${lockfd:-} ]]; then
    exec {lockfd}>&-
  fi
}

if [[ ${1:-} == checks ]]; then
  install_checks
  exit 0
elif [[ $# -gt 0 ]]; then
  log "usage: scripts/tools.sh [checks]"
  exit 2
fi

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
# promtool (Debian's prometheus package) checks and unit-tests deploy/prometheus/rules.yaml in
# `make test`. The package also starts a Prometheus on :9090 where an init system runs; nothing
# here uses it.
command -v promtool >/dev/null || [[ -x /usr/bin/promtool ]] || apt_install prometheus
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

install_checks
