#!/usr/bin/env bash
# Checks the monitoring files under deploy/: the Prometheus alerting rules parse
# (`promtool check rules`) and every alert behaves as its unit test says (`promtool test rules`).
# promtool comes with Debian's prometheus package, which scripts/tools.sh installs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
promtool=$(command -v promtool || echo /usr/bin/promtool)
"$promtool" check rules deploy/prometheus/rules.yaml
"$promtool" test rules deploy/prometheus/rules_test.yaml
