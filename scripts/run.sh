#!/usr/bin/env bash
# `make run`: the whole development stack in the foreground, with the config defaults built into
# the binaries (config/config.go) and all state under .data/, so a second run finds its data:
#
#   Postgres     .data/pg (initdb once), 127.0.0.1:55432, database and role "imprun"
#                (skipped when IMPRUN_DATABASE_URL is set: that database is used instead)
#   Temporal     dev server, state in .data/temporal.db, gRPC 127.0.0.1:7233, Web UI :8233
#   OIDC issuer  `imprun-api dev-issuer` on 127.0.0.1:9998 (when cmd/api has that command)
#   api, worker  built into bin/, schema migrated, then both started
#
# Ctrl-C (or any child exiting) stops everything. Logs of the infrastructure are in .data/logs/;
# api and worker print to this terminal, prefixed with their name.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
data=$root/.data
logs=$data/logs

PG_PORT=55432
TEMPORAL_PORT=7233
TEMPORAL_UI_PORT=8233
ISSUER_HOST=127.0.0.1
ISSUER_PORT=9998
SEARCH_ATTRIBUTES=(TenantId ClusterId ProductId PublishId RolloutId)

say() { printf '==> %s\n' "$*"; }
die() {
  printf 'run.sh: %s\n' "$*" >&2
  exit 1
}

bash scripts/tools.sh
mkdir -p "$data" "$logs"

# --- process bookkeeping --------------------------------------------------------------------

pids=()  # background children, in start order; stopped in reverse
names=()
pg_data= # set once we started (or adopted) the .data Postgres, which pg_ctl stops

as_pg() {
  # initdb, pg_ctl and postgres refuse to run as root.
  if [[ $(id -u) -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

cleanup() {
  local rc=$? i p alive
  trap - EXIT INT TERM
  echo
  say "stopping the stack"
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null || true
  done
  # Temporal and the api drain in-flight work on SIGTERM; give them 20 s before SIGKILL.
  for _ in $(seq 200); do
    alive=
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [[ -z $alive ]] && break
    sleep 0.1
  done
  for i in "${!pids[@]}"; do
    if kill -0 "${pids[i]}" 2>/dev/null; then
      say "${names[i]} did not stop in time; killing it"
      kill -KILL "${pids[i]}" 2>/dev/null || true
    fi
  done
  wait 2>/dev/null || true
  if [[ -n $pg_data ]]; then
    as_pg "$pg_bin/pg_ctl" -D "$pg_data" stop -m fast -w >/dev/null 2>&1 || true
  fi
  say "stopped"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start_bg NAME LOGMODE CMD...: LOGMODE "file" writes to .data/logs/NAME.log only (a new one
# each run), "tee" also shows the output here with a [NAME] prefix.
start_bg() {
  local name=$1 mode=$2
  shift 2
  if [[ $mode == tee ]]; then
    # The filter ignores Ctrl-C so it can still show the child's shutdown messages; it ends
    # when the child closes its output.
    "$@" > >(
      trap '' INT
      tee "$logs/$name.log" | sed -u "s/^/[$name] /"
    ) 2>&1 &
  else
    "$@" >"$logs/$name.log" 2>&1 &
  fi
  pids+=($!)
  names+=("$name")
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_until NAME PID SECONDS CMD...: polls CMD until it succeeds; gives up when the process
# PID has exited (showing its log) or the time is up.
wait_until() {
  local name=$1 pid=$2 secs=$3
  shift 3
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$logs/$name.log" >&2 || true
      die "$name exited during startup (log: $logs/$name.log)"
    fi
    ((SECONDS < deadline)) || die "$name not ready after ${secs}s (log: $logs/$name.log)"
    sleep 0.5
  done
}

for port in "$TEMPORAL_PORT" "$TEMPORAL_UI_PORT" "$ISSUER_PORT" 8080 9090 8081; do
  port_busy "$port" && die "port $port on 127.0.0.1 is in use (another \`make run\`?); stop it first"
done

# --- Postgres -------------------------------------------------------------------------------

if [[ -n ${IMPRUN_DATABASE_URL:-} ]]; then
  say "Postgres: using IMPRUN_DATABASE_URL"
else
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  [[ -x $pg_bin/initdb ]] || die "PostgreSQL server binaries not found; run scripts/tools.sh"
  pg_dir=$data/pg
  mkdir -p "$pg_dir"
  if [[ $(id -u) -eq 0 ]]; then
    chown postgres:postgres "$pg_dir"
    chmod 700 "$pg_dir"
    runuser -u postgres -- test -w "$pg_dir" ||
      die "the postgres user cannot reach $pg_dir (a parent directory is not searchable by others); move the checkout or set IMPRUN_DATABASE_URL"
  fi
  if [[ ! -f $pg_dir/data/PG_VERSION ]]; then
    say "Postgres: creating the cluster in $pg_dir/data"
    as_pg "$pg_bin/initdb" -D "$pg_dir/data" -U postgres --auth=trust -E UTF8 --locale=C \
      --no-instructions >"$logs/initdb.log" 2>&1 || {
      cat "$logs/initdb.log" >&2
      die "initdb failed"
    }
  fi
  pg_data=$pg_dir/data
  if as_pg "$pg_bin/pg_ctl" -D "$pg_data" status >/dev/null 2>&1; then
    say "Postgres: already running from an earlier run; using it"
  else
    port_busy "$PG_PORT" && die "port $PG_PORT on 127.0.0.1 is in use by something else"
    # The log lives in the cluster dir because the server, not this script, opens it.
    as_pg "$pg_bin/pg_ctl" -D "$pg_data" -l "$pg_dir/postgres.log" -w -t 60 \
      -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories='$pg_dir'" \
      start >/dev/null || {
      tail -n 30 "$pg_dir/postgres.log" >&2 || true
      die "Postgres did not start"
    }
  fi
  psql=("$pg_bin/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres)
  if [[ -z $("${psql[@]}" -tAc "SELECT 1 FROM pg_roles WHERE rolname = 'imprun'") ]]; then
    "${psql[@]}" -c "CREATE ROLE imprun LOGIN"
  fi
  if [[ -z $("${psql[@]}" -tAc "SELECT 1 FROM pg_database WHERE datname = 'imprun'") ]]; then
    "${psql[@]}" -c "CREATE DATABASE imprun OWNER imprun"
  fi
  export IMPRUN_DATABASE_URL="postgres://imprun@127.0.0.1:$PG_PORT/imprun?sslmode=disable"
fi

# --- Temporal -------------------------------------------------------------------------------

temporal_args=(server start-dev
  --db-filename "$data/temporal.db"
  --ip 127.0.0.1 --port "$TEMPORAL_PORT" --ui-port "$TEMPORAL_UI_PORT"
  --namespace default)
for sa in "${SEARCH_ATTRIBUTES[@]}"; do temporal_args+=(--search-attribute "$sa=Keyword"); done
say "Temporal: starting the dev server (state in .data/temporal.db)"
start_bg temporal file "$root/bin/temporal" "${temporal_args[@]}"
temporal_pid=${pids[-1]}
tctl=("$root/bin/temporal" --address "127.0.0.1:$TEMPORAL_PORT")
wait_until temporal "$temporal_pid" 60 "${tctl[@]}" operator cluster health
# --search-attribute only applies when the namespace is first created, so a .data/temporal.db
# from before an attribute was added would lack it: add whatever is missing.
existing=$("${tctl[@]}" operator search-attribute list --namespace default)
for sa in "${SEARCH_ATTRIBUTES[@]}"; do
  if ! grep -Eq "(^|[[:space:]])$sa([[:space:]]|$)" <<<"$existing"; then
    "${tctl[@]}" operator search-attribute create --namespace default --name "$sa" --type Keyword >/dev/null
  fi
done

# --- imprun binaries --------------------------------------------------------------------------

issuer_url="(not started: cmd/api has no dev-issuer command)"
if [[ -d cmd/api && -d cmd/worker ]]; then
  say "building bin/imprun-api and bin/imprun-worker"
  go build -o bin/imprun-api ./cmd/api
  go build -o bin/imprun-worker ./cmd/worker

  # The dev issuer is optional until cmd/api grows it. cobra's `help X` exits 0 even for an
  # unknown X, so look at what it says too.
  if help=$(bin/imprun-api help dev-issuer 2>&1) && ! grep -Eq "Unknown help topic|unknown command" <<<"$help"; then
    say "OIDC: starting the dev issuer"
    start_bg dev-issuer file bin/imprun-api dev-issuer
    wait_until dev-issuer "${pids[-1]}" 60 port_busy "$ISSUER_PORT"
    issuer_url=$(grep -Eom1 'https?://[^[:space:]"]+' "$logs/dev-issuer.log" || echo "http://$ISSUER_HOST:$ISSUER_PORT")
  fi

  # Agent JWTs are signed with a secret of this checkout's own, made once and kept in .data/
  # so agents registered in an earlier `make run` stay valid.
  if [[ -z ${IMPRUN_AGENT_JWT_SECRET:-} ]]; then
    secret_file="$data/agent-jwt-secret"
    [[ -s $secret_file ]] || (umask 077 && head -c 48 /dev/urandom | base64 | tr -d '\n' >"$secret_file")
    IMPRUN_AGENT_JWT_SECRET=$(<"$secret_file")
    export IMPRUN_AGENT_JWT_SECRET
  fi

  say "migrating the database"
  bin/imprun-api migrate up

  start_bg worker tee bin/imprun-worker
  start_bg api tee bin/imprun-api serve
else
  say "cmd/api or cmd/worker is missing: running the infrastructure only"
fi

cat <<INFO

  imprun dev stack is up (Ctrl-C stops everything)
    REST API          http://127.0.0.1:8080
    agent gRPC        127.0.0.1:9090
    Temporal gRPC     127.0.0.1:$TEMPORAL_PORT
    Temporal Web UI   http://127.0.0.1:$TEMPORAL_UI_PORT
    OIDC issuer       $issuer_url
    Postgres          $(sed -E 's#(://[^:/@]+:)[^@]*@#\1****@#' <<<"$IMPRUN_DATABASE_URL")
    logs              $logs/

INFO

# Stay in the foreground until a child exits (then the trap stops the rest) or we are
# interrupted.
set +e
wait -n "${pids[@]}"
rc=$?
set -e
for i in "${!pids[@]}"; do
  kill -0 "${pids[i]}" 2>/dev/null || say "${names[i]} exited (status $rc); stopping the rest"
done
exit "$rc"
