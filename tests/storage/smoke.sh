#!/usr/bin/env bash
# Smoke test of the storage test servers with their real clients (curl, xrdcp,
# xrdfs). Run as root after scripts/storage-servers.sh:
#
#   tests/storage/smoke.sh            # small files
#   BIG=1 tests/storage/smoke.sh      # plus a timed 1 GiB round trip each
#
# WebDAV runs on 127.0.0.1:${WEBDAV_PORT:-18443}; XRootD runs in a private
# network namespace (unshare -n) on ports 1094 and 1095 (for third-party copy).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
# Without these the XRootD client retries a dead endpoint for minutes.
export XRD_CONNECTIONRETRY=1 XRD_CONNECTIONWINDOW=5 XRD_REQUESTTIMEOUT=300

fail() { echo "FAIL: $*" >&2; exit 1; }
expect() { # expect WANT GOT WHAT
  [ "$1" = "$2" ] || fail "$3: expected '$1', got '$2'"
  echo "ok: $3 -> $2"
}

if [ "${1:-}" = --xrootd-inner ]; then
  # ---- XRootD, inside the private network namespace ------------------------
  W="$2"
  ip link set lo up
  P1="$("$HERE/xrootd.sh" "$W/x1" 1094 | tail -n 1)"
  P2="$("$HERE/xrootd.sh" "$W/x2" 1095 | tail -n 1)"
  stop() { # SIGTERM; xrootd takes about 2 s to exit
    kill "$P1" "$P2" 2>/dev/null || true
    for _ in $(seq 1 100); do
      [ -d "/proc/$P1" ] || [ -d "/proc/$P2" ] || break
      sleep 0.1
    done
  }
  trap stop EXIT
  H=127.0.0.1:1094
  printf 'hello-xrootd\n' > "$W/small"

  # xrdcp creates missing parent directories by itself (5.5 has no -p/--path).
  xrdcp -s "$W/small" "root://$H//data/a/b/file"; expect 0 $? "xrdcp upload (mkdir parents)"
  set +e
  out="$(xrdcp -s "$W/small" "root://$H//data/a/b/file" 2>&1 | tr -d '\0')"; rc=$?  # pipefail: xrd*'s status
  set -e
  expect 50 "$rc" "xrdcp upload onto existing file without -f ($out)"
  xrdcp -s -f "$W/small" "root://$H//data/a/b/file"; expect 0 $? "xrdcp -f overwrite"
  xrdcp -s "root://$H//data/a/b/file" "$W/dl"; cmp "$W/small" "$W/dl"; echo "ok: xrdcp download identical"

  out="$(xrdfs $H stat /data/a/b/file)"
  echo "$out"
  expect 13 "$(echo "$out" | awk '$1 == "Size:" {print $2}')" "xrdfs stat Size"
  echo "$out" | grep -q '^Flags: .*IsReadable' || fail "stat flags"

  set +e
  out="$(xrdfs $H stat /data/nope 2>&1 | tr -d '\0')"; rc=$?  # pipefail: xrd*'s status
  set -e
  expect 54 "$rc" "xrdfs stat missing ($out)"
  echo "$out" | grep -q '\[3011\]' || fail "stat missing: no [3011] in '$out'"
  set +e
  out="$(xrdcp -s "root://$H//data/nope" "$W/nope" 2>&1 | tr -d '\0')"; rc=$?  # pipefail: xrd*'s status
  set -e
  expect 54 "$rc" "xrdcp missing source ($out)"
  [ ! -e "$W/nope" ] || fail "xrdcp of a missing file left a local file"

  want="$(python3 -c 'import sys,zlib; print("%08x" % zlib.adler32(open(sys.argv[1],"rb").read()))' "$W/small")"
  expect "adler32 $want" "$(xrdfs $H query checksum /data/a/b/file)" "xrdfs query checksum"

  out="$(xrdfs $H spaceinfo /data)"; echo "$out"
  echo "$out" | grep -q '^Total: *[0-9]' || fail "spaceinfo"
  out="$(xrdfs $H query space /data)"; echo "$out"
  echo "$out" | grep -q '^oss.cgroup=.*&oss.space=[0-9]*&oss.free=[0-9]*' || fail "query space"

  # Third-party copy (destination server pulls with xrdcp --server).
  xrdcp -s --tpc only "root://$H//data/a/b/file" "root://127.0.0.1:1095//data/t/p/c"
  expect 0 $? "xrdcp --tpc only between two servers"
  cmp "$W/small" "$W/x2/data/t/p/c"; echo "ok: tpc copy identical"
  xrdcp -s --tpc only "root://$H//data/a/b/file" "root://$H//data/a/b/copy"
  expect 0 $? "xrdcp --tpc only on one server"

  out="$(xrdfs $H rm /data/a/b/file)"; expect 0 $? "xrdfs rm ($out)"
  set +e
  out="$(xrdfs $H rm /data/a/b/file 2>&1 | tr -d '\0')"; rc=$?  # pipefail: xrd*'s status
  set -e
  expect 54 "$rc" "xrdfs rm missing"

  if [ "${BIG:-0}" = 1 ]; then
    head -c 1G /dev/urandom > "$W/big"
    t0=$(date +%s.%N); xrdcp -s "$W/big" "root://$H//data/big"; t1=$(date +%s.%N)
    xrdcp -s "root://$H//data/big" "$W/big.dl"; t2=$(date +%s.%N)
    xrdcp -s --tpc only "root://$H//data/big" "root://127.0.0.1:1095//data/big"; t3=$(date +%s.%N)
    cmp "$W/big" "$W/big.dl"; cmp "$W/big" "$W/x2/data/big"
    awk -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" \
      'BEGIN { printf "ok: xrootd 1 GiB: upload %.1f s, download %.1f s, tpc %.1f s\n", b-a, c-b, d-c }'
    rm -f "$W/big" "$W/big.dl"
  fi
  exit 0
fi

W="$(mktemp -d)"
NGINX_PID=""
trap 'kill $NGINX_PID 2>/dev/null || true; rm -rf "$W"' EXIT
chmod 755 "$W"

# ---- WebDAV over HTTPS ----------------------------------------------------------
PORT="${WEBDAV_PORT:-18443}"
NGINX_PID="$("$HERE/webdav.sh" "$W/dav" "$PORT" | tail -n 1)"
U="https://127.0.0.1:$PORT"
C=(curl -sS --cacert "$W/dav/ca.pem" -o /dev/null -w '%{http_code}')
printf 'hello-webdav\n' > "$W/small"

expect 201 "$("${C[@]}" -T "$W/small" "$U/a/b/c/file")" "PUT new (parents created)"
expect 204 "$("${C[@]}" -T "$W/small" "$U/a/b/c/file")" "PUT overwrite"
curl -sS --cacert "$W/dav/ca.pem" "$U/a/b/c/file" | cmp - "$W/small"; echo "ok: GET identical"
curl -sS --cacert "$W/dav/ca.pem" "https://localhost:$PORT/a/b/c/file" | cmp - "$W/small"
echo "ok: GET via https://localhost (SAN)"
len="$(curl -sS --cacert "$W/dav/ca.pem" -I "$U/a/b/c/file" | tr -d '\r' | awk -F': ' 'tolower($1) == "content-length" {print $2}')"
expect 13 "$len" "HEAD Content-Length"
expect 200 "$("${C[@]}" -H 'Authorization: Bearer whatever' "$U/a/b/c/file")" "GET with a Bearer token"
expect 404 "$("${C[@]}" "$U/nope")" "GET missing"
expect 404 "$("${C[@]}" -I "$U/nope")" "HEAD missing"
expect 207 "$("${C[@]}" -X PROPFIND -H 'Depth: 1' "$U/a/b/c/")" "PROPFIND"
expect 204 "$("${C[@]}" -X DELETE "$U/a/b/c/file")" "DELETE"
expect 404 "$("${C[@]}" -X DELETE "$U/a/b/c/file")" "DELETE missing"

if [ "${BIG:-0}" = 1 ]; then
  head -c 1G /dev/urandom > "$W/big"
  t0=$(date +%s.%N)
  expect 201 "$("${C[@]}" -T "$W/big" "$U/big/big")" "PUT 1 GiB"
  t1=$(date +%s.%N)
  curl -sS --cacert "$W/dav/ca.pem" -o "$W/big.dl" "$U/big/big"
  t2=$(date +%s.%N)
  cmp "$W/big" "$W/big.dl"
  awk -v a="$t0" -v b="$t1" -v c="$t2" \
    'BEGIN { printf "ok: webdav 1 GiB: upload %.1f s, download %.1f s\n", b-a, c-b }'
  rm -f "$W/big" "$W/big.dl"
fi
kill "$NGINX_PID"; NGINX_PID=""

# ---- XRootD (private network namespace) ------------------------------------------
unshare -n "$0" --xrootd-inner "$W"
echo "storage smoke test passed"
