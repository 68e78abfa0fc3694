#!/usr/bin/env bash
# End to end on the embedded default: JOBS /bin/true jobs from submission to
# all final, run by local pilots with SLOTS single-core slots.
#   JOBS=1000 SLOTS=8 scripts/bench-e2e.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${CARGO_TARGET_DIR:-target}/release"
JOBS="${JOBS:-1000}"
SLOTS="${SLOTS:-8}"
DATA=$(mktemp -d)
export DIRAC__RESOURCES__SITES="{LCG.Local.local: {CEs: {localhost: {CEType: local, Queues: {default: {maxCPUTime: 86400, MaxTotalJobs: $SLOTS, NumberOfProcessors: 1}}}}}}"
RUST_LOG=warn "$BIN/diracd" all --data-dir "$DATA" --listen 127.0.0.1:0 --auth-listen 127.0.0.1:0 &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 1 300); do [ -f "$DATA/client.yaml" ] && break; sleep 0.1; done
"$BIN/dirac-bench" e2e --config "$DATA/client.yaml" --jobs "$JOBS" "$@"
echo "($SLOTS local slots)"
