#!/usr/bin/env bash
# Checks the Prometheus configuration, the alerting rules and the rules'
# unit tests with promtool. When promtool is missing it installs Debian's
# prometheus package, which ships it (as root, without prompting); running
# the script again installs nothing.
#
#   deploy/prometheus/check.sh
#
# PROMTOOL names another promtool binary to use instead.
#
# On a host that runs systemd, installing the package also enables and starts
# a Prometheus server; `systemctl disable --now prometheus` stops it. In a
# container or CI job nothing is started.
set -euo pipefail

cd "$(dirname "$0")"

promtool="${PROMTOOL:-}"
if [[ -z "$promtool" ]]; then
	if ! command -v promtool >/dev/null 2>&1; then
		if [[ "$(id -u)" -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
			echo "check.sh: promtool not found; install Debian's prometheus package (apt-get install prometheus) or set PROMTOOL" >&2
			exit 1
		fi
		echo "check.sh: promtool not found; installing Debian's prometheus package" >&2
		export DEBIAN_FRONTEND=noninteractive
		apt_install() {
			apt-get install -y --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold prometheus
		}
		# The package lists may be missing or stale on a fresh machine.
		if ! apt_install >/dev/null 2>&1; then
			apt-get update -qq
			apt_install >/dev/null
		fi
	fi
	promtool=promtool
fi

"$promtool" --version 2>&1 | sed -n 1p
"$promtool" check config prometheus.yml
"$promtool" check rules rules.yml
"$promtool" test rules rules_test.yml
