// Package nginx runs an nginx for the reference agent and changes its configuration safely.
//
// The agent owns one nginx per data plane directory (Options.Dir):
//
//	current -> gen/<n>           the tree nginx serves (a symlink, swapped atomically)
//	gen/<n>/nginx.conf           main configuration: one include per site file
//	gen/<n>/sites/<id>/<file>    one directory per site (a publish): its config and credential map
//	logs/error.log, access.log
//	run/nginx.pid, run/status.sock   the master's pid; a status server that names the generation
//	tmp/                         nginx's temporary files
//
// Every apply is a short sequence of named steps, as nginx-agent and ingress-nginx do it:
// stage a new generation, `nginx -t` it, bind-check new listeners, swap the symlink, reload
// (SIGHUP), confirm that the new workers answer with the new generation and that no [emerg]
// appeared in the error log, and on any failure swap back and reload the last good tree. A site
// nginx refuses is left out and reported; every other site keeps serving.
//
// nginx runs as a child of the agent in its own session, so it outlives the agent: a restarted
// agent adopts it by its pid file, and nginx keeps serving the last applied tree meanwhile.
package nginx
