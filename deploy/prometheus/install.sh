#!/usr/bin/env bash
# Makes sure promtool and the prometheus server binary are installed, from
# Debian's prometheus package, which ships both (as root, without
# prompting). Running it again installs nothing. The tests that check the
# services' metrics and scrape a running stack use them.
#
# On a host that runs systemd, installing the package also enables and starts
# a Prometheus server; `systemctl disable --now prometheus` stops it. In a
# container or CI job nothing is started.
set -euo pipefail

if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
	exit 0
fi
if [[ "$(id -u)" -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
	echo "install.sh: promtool or prometheus not found; install Debian's prometheus package (apt-get install prometheus)" >&2
	exit 1
fi
echo "install.sh: installing Debian's prometheus package (promtool, prometheus)" >&2
export DEBIAN_FRONTEND=noninteractive
apt_install() {
	apt-get install -y --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold prometheus
}
# The package lists may be missing or stale on a fresh machine.
if ! apt_install >/dev/null 2>&1; then
	apt-get update -qq
	apt_install >/dev/null
fi
