#!/usr/bin/env bash
# Submission throughput of a release `diracd all` on a fresh database:
#   BACKEND=mysql|postgres|sqlite JOBS=200000 BATCH=1000 CONCURRENCY=4 scripts/bench-submit.sh
# Prints dirac-bench's report (jobs/s, batch latency percentiles).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${CARGO_TARGET_DIR:-target}/release"
BACKEND="${BACKEND:-mysql}"
JOBS="${JOBS:-200000}"
BATCH="${BATCH:-1000}"
CONCURRENCY="${CONCURRENCY:-4}"
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
RUST_LOG=warn "$BIN/diracd" all --data-dir "$DATA" --listen 127.0.0.1:0 --auth-listen 127.0.0.1:0 &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 1 300); do [ -f "$DATA/client.yaml" ] && break; sleep 0.1; done
"$BIN/dirac-bench" submit --config "$DATA/client.yaml" --jobs "$JOBS" --batch "$BATCH" --concurrency "$CONCURRENCY" "$@"
