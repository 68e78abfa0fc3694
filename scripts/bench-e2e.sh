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
RUST_LOG=warn "$BIN/diracd" all --data-dir "$DATA" --listen 127.0.0.1:0 &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 1 300); do [ -f "$DATA/client.yaml" ] && break; sleep 0.1; done
export DIRAC_CONFIG="$DATA/client.yaml"
python3 - "$JOBS" "$DATA/jobs.jdl" <<'PY'
import sys
n, path = int(sys.argv[1]), sys.argv[2]
open(path, "w").write(f'[ Executable = "/bin/true"; JobName = "e2e_%n"; CPUTime = 600; Parameters = {n}; ]\n')
PY
start=$(date +%s.%N)
"$BIN/dirac" --json job submit "$DATA/jobs.jdl" > /dev/null
while :; do
  left=$("$BIN/dirac" --json job summary --group-by Status | python3 -c 'import json,sys; print(sum(r["count"] for r in json.load(sys.stdin)["rows"] if r["values"][0] not in ("Done","Failed","Killed")))')
  [ "$left" = 0 ] && break
  sleep 0.5
done
end=$(date +%s.%N)
"$BIN/dirac" job summary --group-by Status
python3 -c "import sys; s=float(sys.argv[2])-float(sys.argv[1]); print(f'{sys.argv[3]} jobs final in {s:.1f} s ({int(sys.argv[3])/s:.1f} jobs/s) with {sys.argv[4]} slots')" "$start" "$end" "$JOBS" "$SLOTS"
