#!/usr/bin/env bash
# Installs Debian's chromium for the browser test of `bench report` (tests/test_report.py), only where
# it is missing. Needs root for apt-get (CI: .ci/run runs it as root). Prints where chromium is.
#
#   scripts/install-chromium.sh
set -euo pipefail

say() { printf 'install-chromium: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

installed() {
    command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1
}

if ! installed; then
    command -v apt-get >/dev/null || die "chromium is missing and there is no apt-get to install it"
    [[ $(id -u) == 0 ]] || die "chromium is missing; installing it needs root (apt-get install -y chromium)"
    log=$(mktemp -t install-chromium.XXXXXX.log)
    say "installing chromium with apt-get (log: $log)"
    {
        # Update the package lists only when apt does not know the package (fresh image) or the install
        # fails (stale lists pointing at removed .debs).
        if [[ -z $(apt-cache policy chromium 2>/dev/null) ]] ||
            apt-cache policy chromium 2>/dev/null | grep -q 'Candidate: (none)'; then
            apt-get update -qq
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium ||
            { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
    } >"$log" 2>&1 || { tail -n 30 "$log" >&2; die "apt-get install chromium failed (full log: $log)"; }
    installed || die "apt-get installed chromium but no chromium command is on PATH"
fi
command -v chromium 2>/dev/null || command -v chromium-browser
