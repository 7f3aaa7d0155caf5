// Package client is the REST client of imprun-server generated from http/openapi.yaml by
// oapi-codegen (pinned in scripts/client.sh). It is committed; `make client` regenerates it and
// `make test` fails when it no longer matches the document.
package client

//go:generate bash ../scripts/client.sh
