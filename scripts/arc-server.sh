#!/usr/bin/env bash
# Install the real ARC CE (NorduGrid A-REX 6, Debian 12 packages) that the arc
# CE (REST) integration tests use (idempotent): A-REX with its fork back end,
# the ARC command-line clients (arcinfo/arcsub/arcstat, handy for debugging),
# plus openssl (test CA), curl (readiness checks), iproute2 and util-linux
# (network namespaces), procps (ps/pgrep, used by the fork back end). Only
# touches apt when one of them is missing. Start A-REX with tests/ce/arex.sh.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
PKGS=(nordugrid-arc-arex nordugrid-arc-client openssl curl iproute2 util-linux procps)
missing=0
for f in /usr/sbin/arched /usr/share/arc/arc-arex-ws-start /usr/lib/arc/arcconfig-parser \
         /usr/lib/arc/arc-config-check /usr/share/arc/submit-fork-job /usr/bin/arcsub; do
  [ -x "$f" ] || missing=1
done
for bin in openssl curl ip unshare pgrep ps; do
  command -v "$bin" >/dev/null 2>&1 || missing=1
done
if [ "$missing" = 1 ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo -E"
  log="$(mktemp)"
  trap 'rm -f "$log"' EXIT
  # Quiet on success; show apt's output if it fails.
  if ! { $SUDO apt-get update -qq && \
         $SUDO apt-get install -y -qq --no-install-recommends "${PKGS[@]}"; } >"$log" 2>&1; then
    cat "$log" >&2
    exit 1
  fi
  # Where an init system exists the package starts the system A-REX (port 443,
  # all interfaces; it fails without /etc/grid-security host certificates).
  # The tests run their own instance, so stop a packaged one if it is up.
  for pidfile in /run/arched-arex-ws.pid /run/arched-arex.pid; do
    if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      $SUDO kill "$(cat "$pidfile")" 2>/dev/null || true
    fi
  done
fi
