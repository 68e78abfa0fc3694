#!/usr/bin/env bash
# The file catalog under load, through gRPC, on a fresh database:
#   BACKEND=mysql|postgres|sqlite FILES=100000 DIRS=100 BATCH=1000 CONCURRENCY=4 scripts/bench-catalog.sh
# Prints dirac-bench's JSON report (registration and lookup rates, listing
# and dump rates with the time to the first entry, a metadata query).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${CARGO_TARGET_DIR:-target}/release"
BACKEND="${BACKEND:-mysql}"
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
TOKEN=$("$BIN/diracd" token --data-dir "$DATA" --user admin --group dteam_admin)
"$BIN/dirac-bench" catalog --config "$DATA/client.yaml" --token "$TOKEN" --root /dteam/bench \
  --files "${FILES:-100000}" --dirs "${DIRS:-100}" --batch "${BATCH:-1000}" --concurrency "${CONCURRENCY:-4}" "$@"
