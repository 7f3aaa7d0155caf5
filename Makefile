# Developer entry points. CI runs `make test` through .ci/run; every target that needs tools
# beyond Go gets them from scripts/tools.sh, so a fresh Debian machine with Go is enough.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
GO ?= go

.DEFAULT_GOAL := help
.PHONY: help run demo test chaos bench build proto client lint lint-openapi lint-deploy tools

## help: list the targets
help:
	@sed -n 's/^## //p' $(MAKEFILE_LIST)

## run: the whole dev stack in the foreground (Postgres, Temporal + Web UI, OIDC issuer, api, worker)
run:
	bash scripts/run.sh

## demo: with `make run` up in another shell, real traffic: an agent with nginx, a sample backend, curl (200, 401, 429, revoke)
demo:
	bash scripts/demo.sh

## test: vet, every test (unit, integration, end-to-end), the linters of the OpenAPI document and of deploy/agent/, and a check of docker-compose.yml
test: tools
	$(GO) vet ./...
	bash scripts/proto.sh lint
	bash scripts/check-monitoring.sh
	bash scripts/lint-openapi.sh
	bash scripts/lint-deploy.sh
	bash scripts/client.sh check
	$(GO) test -count=1 -timeout 20m ./...
# The compose check reads the file's structure only; docker-compose.yml insists on a real agent
# JWT secret, which a syntax check does not need, so it gets a placeholder unless one is set.
	if [[ -f docker-compose.yml ]]; then \
	  IMPRUN_AGENT_JWT_SECRET="$${IMPRUN_AGENT_JWT_SECRET:-compose-syntax-check-placeholder-not-a-secret}" \
	    docker-compose -f docker-compose.yml config -q; \
	fi

## chaos: the chaos suite (not in `make test`): publishes, credential changes and decisions through two api processes while the worker, a replica and agents are killed and Postgres and Temporal restart; prints the figures (CHAOS_N=12)
chaos: tools
	IMPRUN_CHAOS=1 IMPRUN_CHAOS_N=$${CHAOS_N:-12} $(GO) test -count=1 -timeout 20m -run '^TestChaos$$' -v ./e2e

## bench: Go benchmarks only, with allocation figures (the replicated agent fleet alone takes about 10 minutes)
bench: tools
	$(GO) test -run '^$$' -bench . -benchmem -timeout 60m ./...

## build: every command under cmd/ into bin/imprun-<name>
build:
	mkdir -p bin
	@for dir in cmd/*/; do \
	  compgen -G "$${dir}*.go" >/dev/null || continue; \
	  name=$$(basename "$$dir"); \
	  echo "go build -o bin/imprun-$$name ./$$dir"; \
	  $(GO) build -o "bin/imprun-$$name" "./$$dir"; \
	done

## proto: regenerate the committed gRPC code from proto/
proto: tools
	bash scripts/proto.sh

## client: regenerate the committed REST client (client/) from http/openapi.yaml
client: tools
	bash scripts/client.sh

## lint: gofmt and go vet
lint:
	@unformatted=$$(gofmt -l $$(find . -name '*.go' -not -path './.git/*' -not -path './.data/*' -not -path './bin/*')); \
	if [[ -n $$unformatted ]]; then echo "gofmt -w needed on:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

## lint-openapi: redocly lint of http/openapi.yaml (recommended rules; any warning fails)
lint-openapi:
	bash scripts/lint-openapi.sh

## lint-deploy: kubeconform -strict of deploy/agent/ against the committed Kubernetes schemas
lint-deploy:
	bash scripts/lint-deploy.sh

## tools: install what the targets need (Postgres, protoc, docker-compose, Temporal CLI, oapi-codegen, Redocly CLI, kubeconform)
tools:
	bash scripts/tools.sh
