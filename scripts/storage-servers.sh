#!/usr/bin/env bash
# Install the real storage servers the storage-plugin integration tests use
# (idempotent): nginx with the WebDAV extension module (HTTPS/WebDAV) and
# XRootD server + clients, plus iproute2 (network namespaces) and openssl
# (test CA), curl (readiness checks). Only touches apt when one of the binaries is missing.
# Start the servers with tests/storage/webdav.sh and tests/storage/xrootd.sh.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
PKGS=(nginx-extras xrootd-server xrootd-client iproute2 openssl curl)
missing=0
for bin in nginx xrootd xrdcp xrdfs ip openssl curl; do
  command -v "$bin" >/dev/null 2>&1 || missing=1
done
# nginx-extras provides the dav_ext module; plain nginx does not.
if [ ! -f /usr/lib/nginx/modules/ngx_http_dav_ext_module.so ] &&
   [ ! -f /usr/share/nginx/modules/ngx_http_dav_ext_module.so ]; then
  missing=1
fi
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
  # Debian starts the packaged nginx on port 80 (all interfaces) where an init
  # system exists; the tests run their own instances, so stop it if present.
  if [ -f /run/nginx.pid ] && kill -0 "$(cat /run/nginx.pid)" 2>/dev/null; then
    $SUDO /usr/sbin/nginx -s quit 2>/dev/null || true
  fi
fi
