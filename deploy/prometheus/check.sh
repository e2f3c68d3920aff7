#!/usr/bin/env bash
# Checks the Prometheus configuration, the alerting rules and the rules'
# unit tests with promtool. When promtool is missing, install.sh installs
# Debian's prometheus package, which ships it.
#
#   deploy/prometheus/check.sh
#
# PROMTOOL names another promtool binary to use instead.
set -euo pipefail

cd "$(dirname "$0")"

promtool="${PROMTOOL:-}"
if [[ -z "$promtool" ]]; then
	./install.sh
	promtool=promtool
fi

"$promtool" --version 2>&1 | sed -n 1p
"$promtool" check config prometheus.yml
"$promtool" check rules rules.yml
"$promtool" test rules rules_test.yml
