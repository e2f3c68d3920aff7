#!/usr/bin/env bash
# Makes sure the browser test has what it needs: Chromium from Debian's
# chromium package (with a font, for readable screenshots) when
# /usr/bin/chromium is missing, as root and without prompting, and
# playwright-core from npm at the version package-lock.json pins (npm ci;
# no browser is downloaded: the test drives Debian's). Running it again
# installs no Debian package.
set -euo pipefail
cd "$(dirname "$0")"

chromium=/usr/bin/chromium
if [[ ! -x "$chromium" ]]; then
	if [[ "$(id -u)" -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
		echo "install.sh: $chromium not found; install Debian's chromium package (apt-get install chromium)" >&2
		exit 1
	fi
	echo "install.sh: installing Debian's chromium package" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt_install() {
		apt-get install -y --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
			chromium fonts-dejavu-core </dev/null
	}
	# The package lists may be missing or stale on a fresh machine.
	if ! apt_install >/dev/null 2>&1; then
		apt-get update -qq </dev/null
		apt_install >/dev/null
	fi
fi
if ! command -v npm >/dev/null 2>&1; then
	echo "install.sh: npm not found; the browser test needs Node.js 20 or later with npm" >&2
	exit 1
fi
npm ci --no-audit --no-fund --loglevel=error </dev/null
