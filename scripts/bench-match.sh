#!/usr/bin/env bash
# Matcher throughput of a release `diracd all` (no local pilots) on a fresh
# database: BACKEND=mysql|postgres|sqlite JOBS=20000 PILOTS=500 scripts/bench-match.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${CARGO_TARGET_DIR:-target}/release"
BACKEND="${BACKEND:-mysql}"
JOBS="${JOBS:-20000}"
PILOTS="${PILOTS:-500}"
DATA=$(mktemp -d)
case "$BACKEND" in
  mysql)
    mariadb -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS dirac_bench; CREATE DATABASE dirac_bench"
    export DIRAC__SERVICES__DATABASES__JOBDB="mysql://root@127.0.0.1:3306/dirac_bench" ;;
  postgres)
    psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS dirac_bench" -c "CREATE DATABASE dirac_bench"
    export DIRAC__SERVICES__DATABASES__JOBDB="postgres://postgres@127.0.0.1:5432/dirac_bench" ;;
  sqlite) ;;
  *) echo "BACKEND must be mysql, postgres or sqlite" >&2; exit 2 ;;
esac
export DIRAC__RESOURCES__SITES='{}'
RUST_LOG=warn "$BIN/diracd" all --data-dir "$DATA" --listen 127.0.0.1:0 --auth-listen 127.0.0.1:0 &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 1 300); do [ -f "$DATA/client.yaml" ] && break; sleep 0.1; done
"$BIN/diracd" token --data-dir "$DATA" --user pilot > "$DATA/pilot-token"
"$BIN/dirac-bench" match --config "$DATA/client.yaml" --pilot-token-file "$DATA/pilot-token" \
  --jobs "$JOBS" --pilots "$PILOTS" "$@"
