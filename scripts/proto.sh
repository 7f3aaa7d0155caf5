#!/usr/bin/env bash
# Regenerates the Go code for proto/agent.proto and lints the protocol with buf.
#
#   scripts/proto.sh              install tools if needed, regenerate proto/agentv1, lint
#   scripts/proto.sh lint         install tools if needed, lint, and check that the committed
#                                 generated code is what the .proto generates; changes no file
#                                 (what `make test` runs)
#   scripts/proto.sh breaking REF `buf breaking` against a released git ref, e.g. v0.1.0
#   scripts/proto.sh tools        install tools only
#
# Generation goes through `buf generate` (buf.gen.yaml) rather than protoc: buf carries its own
# compiler and the well-known types (google/protobuf/timestamp.proto), so the file that is
# linted is exactly the file that is compiled, and a fresh machine needs no protoc or
# libprotobuf-dev from apt. The code generators are the ordinary protoc plugins, pinned below
# and built into $REPO/bin with `go install`, so regenerating on any machine gives the same bytes.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN="$REPO/bin"

# Pinned tool versions. protoc-gen-go must match the google.golang.org/protobuf runtime in go.mod.
PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2
BUF_VERSION=v1.75.0

# installed_version BINARY prints the main module version a Go binary was built from, or nothing.
installed_version() {
	[ -x "$1" ] || return 0
	go version -m "$1" 2>/dev/null | awk '$1 == "mod" { print $3; exit }'
}

# ensure_tool NAME PACKAGE VERSION installs PACKAGE@VERSION into $BIN unless it is already there.
ensure_tool() {
	local name=$1 pkg=$2 version=$3
	if [ "$(installed_version "$BIN/$name")" = "$version" ]; then
		return 0
	fi
	echo "proto.sh: installing $name $version into $BIN" >&2
	# pkg@version installs outside this module's go.mod, so the tools' dependencies never
	# leak into the project's.
	GOBIN="$BIN" go install "$pkg@$version"
}

install_tools() {
	mkdir -p "$BIN"
	ensure_tool protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go "$PROTOC_GEN_GO_VERSION"
	ensure_tool protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC_VERSION"
	ensure_tool buf github.com/bufbuild/buf/cmd/buf "$BUF_VERSION"
}

lint() {
	(cd "$REPO" && "$BIN/buf" lint)
}

# check_generated regenerates into a temporary directory and compares it with the committed
# code, so a .proto edit without `scripts/proto.sh` fails the tests instead of shipping stale
# Go types.
check_generated() {
	local tmp
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' RETURN
	(cd "$REPO" && PATH="$BIN:$PATH" "$BIN/buf" generate -o "$tmp")
	if ! diff -r "$tmp/proto/agentv1" "$REPO/proto/agentv1" >/dev/null; then
		echo "proto.sh: proto/agentv1 is out of date with proto/agent.proto; run scripts/proto.sh" >&2
		diff -r "$tmp/proto/agentv1" "$REPO/proto/agentv1" | head -40 >&2 || true
		return 1
	fi
}

breaking() {
	local ref=$1
	(cd "$REPO" && "$BIN/buf" breaking --against ".git#ref=$ref,subdir=.")
}

generate() {
	# The plugins are looked up on PATH by buf; put ours first so a stray global one is not used.
	(cd "$REPO" && PATH="$BIN:$PATH" "$BIN/buf" generate)
}

case "${1:-all}" in
tools)
	install_tools
	;;
lint)
	install_tools
	lint
	check_generated
	;;
breaking)
	if [ $# -lt 2 ]; then
		echo "usage: $0 breaking GIT_REF" >&2
		exit 2
	fi
	install_tools
	breaking "$2"
	;;
all | gen)
	install_tools
	generate
	lint
	;;
*)
	echo "usage: $0 [gen|lint|breaking REF|tools]" >&2
	exit 2
	;;
esac
