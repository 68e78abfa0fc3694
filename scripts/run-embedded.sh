#!/usr/bin/env bash
# Start the embedded installation (`diracd all`), submit the example JDLs,
# show their states, and keep serving until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${CARGO_TARGET_DIR:-target}/debug"
DATA="${DIRAC_DATA_DIR:-.dirac}"
LISTEN="${DIRAC_LISTEN:-127.0.0.1:8080}"
mkdir -p "$DATA"
rm -f "$DATA/client.yaml"
"$BIN/diracd" all --data-dir "$DATA" --listen "$LISTEN" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true' EXIT
trap 'exit 0' INT TERM
for _ in $(seq 1 300); do
  [ -f "$DATA/client.yaml" ] && break
  kill -0 "$pid" 2>/dev/null || { echo "diracd failed to start (is $LISTEN free? set DIRAC_LISTEN)" >&2; exit 1; }
  sleep 0.1
done
export DIRAC_CONFIG="$DATA/client.yaml"
echo "== submitting examples/*.jdl"
"$BIN/dirac" job submit examples/*.jdl
sleep 1
echo "== job states"
"$BIN/dirac" job search --sort JobID:asc
cat <<MSG

diracd is serving on $LISTEN. Try, in another terminal:
  export DIRAC_CONFIG=$PWD/$DATA/client.yaml
  $BIN/dirac job search --where Status=Waiting
  $BIN/dirac job history 1
Press Ctrl-C to stop.
MSG
wait "$pid"
