#!/usr/bin/env bash
# `make demo`: with `make run` up in another shell, walks the README's story to real traffic.
#
#   1. a provider tenant, a customer tenant and an nginx cluster with a registration token
#   2. the sample backend (cmd/demo-backend) on 127.0.0.1:18090 and the reference agent with an
#      nginx data plane: the template's port 80 served on 127.0.0.1:18080, verifier on :18081
#   3. a catalog (service, backend, route, nginx gateway template, product, a plan of 5 requests
#      a minute), published with api-key auth on payments.acme-<run>.test (a domain granted to the tenant)
#   4. a customer app subscribed under the plan, and an API key
#   5. curl through nginx: 200 with the key, 401 without, 429 over the plan, 401 after revoking
#
# Then it leaves the gateway up for your own curl until Ctrl-C, which stops the agent, its nginx
# and the backend. Every run uses fresh names, so it can run again against the same stack.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
data=$root/.data
API=${API:-http://127.0.0.1:8080}
GRPC=${GRPC:-127.0.0.1:9090}
GATEWAY=127.0.0.1:18080
VERIFIER=127.0.0.1:18081
BACKEND=127.0.0.1:18090
run=$(date +%s)
DOMAIN=acme-$run.test
HOST=payments.$DOMAIN

say() { printf '\n==> %s\n' "$*"; }
die() {
  printf 'demo.sh: %s\n' "$*" >&2
  exit 1
}
port_busy() { (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null; }

curl -fsS "$API/healthz" >/dev/null 2>&1 || die "the API at $API does not answer: start \`make run\` in another shell first"
for a in "$GATEWAY" "$VERIFIER" "$BACKEND"; do
  port_busy "$a" && die "$a is in use (another \`make demo\`?); stop it first"
done

bash scripts/tools.sh
mkdir -p bin "$data/logs"
go build -o bin/imprun-api ./cmd/api
go build -o bin/imprun-agent ./cmd/agent
go build -o bin/imprun-demo-backend ./cmd/demo-backend

pids=()
cleanup() {
  trap - EXIT INT TERM
  say "stopping the agent (and its nginx) and the backend"
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# field NAME: the first string value of "NAME" in the JSON on stdin.
field() { sed -nE "s/.*\"$1\":\"([^\"]*)\".*/\1/p" | head -n 1; }
# call TOKEN METHOD PATH [BODY]: the API's answer; fails loudly on an HTTP error.
call() {
  local out
  out=$(curl -sS -w '\n%{http_code}' -X "$2" -H "Authorization: Bearer $1" -H 'Content-Type: application/json' \
    ${4:+-d "$4"} "$API$3")
  local code=${out##*$'\n'}
  local body=${out%$'\n'*}
  [[ $code == 2* ]] || die "$2 $3 answered $code: $body"
  printf '%s' "$body"
}
gw() { curl -s -o /dev/null -w '%{http_code}' -H "Host: $HOST" "$@" "http://$GATEWAY/charges"; }

OPS=$(bin/imprun-api token --role operator --email ops@example.com)
OWNER=$(bin/imprun-api token --email "owner-$run@acme.test")
DEV=$(bin/imprun-api token --email "dev-$run@globex.test")

say "tenants and an nginx cluster"
ACME=$(call "$OPS" POST /v1/operator/tenants "{\"slug\":\"acme-$run\",\"name\":\"Acme\",\"type\":\"provider\",\"owner_email\":\"owner-$run@acme.test\"}" | field id)
# Tenants publish only hostnames under domains an operator granted them.
call "$OPS" POST "/v1/operator/tenants/$ACME/domains" "{\"domain\":\"$DOMAIN\"}" >/dev/null
call "$OPS" POST /v1/operator/tenants "{\"slug\":\"globex-$run\",\"name\":\"Globex\",\"type\":\"customer\",\"owner_email\":\"dev-$run@globex.test\"}" >/dev/null
# The sample backend listens on loopback, which a cluster refuses as a backend unless its
# operator allows it (egress policy).
CLUSTER=$(call "$OPS" POST /v1/operator/clusters "{\"name\":\"demo-$run\",\"region\":\"local\",\"capabilities\":{\"gateway_classes\":[{\"name\":\"nginx\"}]},\"egress_allow\":{\"cidrs\":[\"127.0.0.0/8\"]}}" | field id)
TOKEN=$(call "$OPS" POST "/v1/operator/clusters/$CLUSTER/registration-tokens" '{}' | field token)

say "the sample backend on $BACKEND and the agent with nginx on $GATEWAY"
bin/imprun-demo-backend --listen "$BACKEND" >"$data/logs/demo-backend.log" 2>&1 &
pids+=($!)
IMPRUN_AGENT_REGISTRATION_TOKEN=$TOKEN bin/imprun-agent run --server "$GRPC" --api "$API" --insecure \
  --state-dir "$data/demo-agent-$run" --data-plane nginx --nginx-listen "80=$GATEWAY" \
  --verify-listen "$VERIFIER" --egress-allow 127.0.0.0/8 --nginx-stop-on-exit >"$data/logs/demo-agent.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do port_busy "$GATEWAY" && break; sleep 0.1; done
port_busy "$GATEWAY" || die "nginx did not come up; see $data/logs/demo-agent.log"

say "the provider's catalog, a plan of 5 requests a minute, and a publish with api-key auth"
SVC=$(call "$OWNER" POST /v1/provider/api-services '{"name":"payments","version":"1.0.0","status":"active"}' | field id)
BE=$(call "$OWNER" POST "/v1/provider/api-services/$SVC/backends" \
  "{\"name\":\"payments-be\",\"scheme\":\"http\",\"endpoints\":[{\"host\":\"${BACKEND%:*}\",\"port\":${BACKEND#*:}}]}" | field id)
call "$OWNER" POST "/v1/provider/api-services/$SVC/routes" \
  "{\"name\":\"charges\",\"paths\":[{\"type\":\"prefix\",\"value\":\"/charges\"}],\"backend_refs\":[{\"backend_id\":\"$BE\",\"weight\":100}]}" >/dev/null
GW=$(call "$OWNER" POST /v1/provider/gateways '{"name":"edge","gateway_class":"nginx","listeners":[{"name":"http","port":80,"protocol":"HTTP"}]}' | field id)
PRODUCT=$(call "$OWNER" POST /v1/provider/products "{\"name\":\"Payments\",\"version\":\"1.0.0\",\"api_services\":[\"$SVC\"]}" | field id)
PLAN=$(call "$OWNER" POST "/v1/provider/products/$PRODUCT/plans" '{"name":"Starter","rate_limit":{"requests":5,"period":"minute"}}' | field id)
call "$OWNER" POST "/v1/provider/products/$PRODUCT/activate" '' >/dev/null
PUB=$(call "$OWNER" POST /v1/provider/product-publishes \
  "{\"product_id\":\"$PRODUCT\",\"cluster_id\":\"$CLUSTER\",\"gateway_id\":\"$GW\",\"environment\":\"prod\",\"hostname\":\"$HOST\",\"auth_mode\":\"api-key\"}" | field id)
for _ in $(seq 100); do
  status=$(call "$OWNER" GET "/v1/provider/product-publishes/$PUB" | field status)
  [[ $status == PUBLISHED || $status == FAILED ]] && break
  sleep 0.2
done
[[ $status == PUBLISHED ]] || die "publish $PUB is $status; see $data/logs/demo-agent.log"
echo "publish $PUB is PUBLISHED: nginx serves it"

say "a customer app, a subscription under the plan, and an API key (shown once)"
APP=$(call "$DEV" POST /v1/customer/apps '{"name":"shop"}' | field id)
call "$DEV" POST /v1/customer/subscriptions "{\"product_publish_id\":\"$PUB\",\"client_app_id\":\"$APP\",\"plan_id\":\"$PLAN\"}" >/dev/null
CRED=$(call "$DEV" POST "/v1/customer/apps/$APP/credentials" '{"type":"api_key"}')
CRED_ID=$(field id <<<"$CRED")
KEY=$(field key <<<"$CRED")
for _ in $(seq 100); do [[ $(gw -H "X-API-Key: $KEY") == 200 ]] && break; sleep 0.1; done

say "traffic through nginx"
echo "\$ curl -H 'Host: $HOST' -H 'X-API-Key: $KEY' http://$GATEWAY/charges"
curl -s -H "Host: $HOST" -H "X-API-Key: $KEY" "http://$GATEWAY/charges"
echo "without a key:         $(gw)"
echo "with a wrong key:      $(gw -H 'X-API-Key: imp_00000000.wrong')"
codes=()
for _ in $(seq 6); do codes+=("$(gw -H "X-API-Key: $KEY")"); done
echo "6 more with the key:   ${codes[*]}   (the plan allows 5 a minute: 429 with Retry-After)"
curl -s -D - -o /dev/null -H "Host: $HOST" -H "X-API-Key: $KEY" "http://$GATEWAY/charges" | grep -iE '^(HTTP|retry-after|x-imprun-deny-reason)'
call "$DEV" POST "/v1/customer/credentials/$CRED_ID/revoke" '{"reason":"demo"}' >/dev/null
start=$(date +%s%N)
until [[ $(gw -H "X-API-Key: $KEY") == 401 ]]; do sleep 0.01; done
echo "revoked: 401 after $((($(date +%s%N) - start) / 1000000)) ms"

cat <<INFO

  The gateway stays up until Ctrl-C:
    curl -H 'Host: $HOST' http://$GATEWAY/charges          (401: no key)
    nginx's tree:   $data/demo-agent-$run/nginx/current/
    agent log:      $data/logs/demo-agent.log

INFO
wait -n "${pids[@]}" || true
