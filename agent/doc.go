// Package agent is the reference imprun agent: the process that runs next to a cluster's
// gateways, holds one gRPC stream to the control plane (proto/agentv1) and turns the commands it
// receives into gateway configuration on disk.
//
// It registers with a registration token on first start and keeps its identity (agent id, JWT,
// refresh secret) in a state directory; it reconnects with backoff when the stream ends; it
// fetches publish snapshots over REST, verifies their checksum and renders them for the gateway
// class (Envoy Gateway YAML or an nginx fragment), or loads them into the nginx it runs; it keeps the set of credentials its gateways
// must accept (hashes only) and answers, through Verifier, whether a presented key may call a
// publish within its plan limits.
//
// The state directory (mode 0700, every file 0600; each is written atomically, or, for the two
// logs, appended to one change a line and rewritten atomically when it has grown):
//
//	identity.json                      agent id, cluster id, JWT and expiry, refresh secret
//	credentials.json                   credential set: hashes, versions, grants, tombstones
//	applied.log                        applied revision, checksum and resources per publish
//	commands.log                       answers to recent commands, replayed on redelivery
//	                                   (agents before v0.3 kept applied.json and commands.json,
//	                                   read once and replaced by the logs)
//	publishes/<publish_id>/rev-<n>.yaml  rendered revision (rev-<n>.conf for nginx)
//	publishes/<publish_id>/current     name of the current revision file
//	publishes/<publish_id>/credentials.yaml  credential hashes granted to the publish
//	                                   (credentials.conf for nginx)
//	counters.json                      the verifier's request counts (rate windows, quotas)
//
// The files of publishes/ are derived, so they are renamed into place without fsyncs: the
// applied log and credentials.json are the record (fsynced, concurrent writers sharing one
// fsync). The command journal is not fsynced either: an answer lost with the machine makes its
// command run again, and every command is idempotent.
// After a crash the agent checks them at start: it rewrites a publish's current pointer and
// credentials file when they differ from what the applied log and the credential set say, and
// reports a revision file that is missing or not what was rendered (applied.log keeps its
// SHA-256) as drift in its applied state, which the control plane repairs by sending the
// revision again.
//
// With the nginx data plane (Config.DataPlane) the agent runs an nginx (package agent/nginx)
// instead of leaving files for a gateway to read; per publish it keeps the verified snapshot it
// serves (publishes/<publish_id>/snapshot-rev-<n>.json) to rebuild nginx's tree after a restart
// without the control plane, and nginx's own directory is nginx/ unless configured elsewhere.
//
// The package shares nothing with the server but the protocol, so the server can be tested
// against it in-process and it can be tested against a fake server.
package agent
