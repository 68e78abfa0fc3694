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
"$BIN/dirac" --json job submit examples/*.jdl > "$DATA/submitted.json"
ids=$(python3 -c 'import json,sys; print(" ".join(str(j["job_id"]) for j in json.load(open(sys.argv[1]))["jobs"]))' "$DATA/submitted.json")
echo "submitted jobs: $ids"
echo "== waiting for local pilots to run them"
for _ in $(seq 1 120); do
  pending=$("$BIN/dirac" --json job status $ids | python3 -c 'import json,sys; print(sum(j["status"] not in ("Done","Failed","Killed") for j in json.load(sys.stdin)["jobs"]))')
  [ "$pending" = 0 ] && break
  sleep 1
done
"$BIN/dirac" job search --sort JobID:asc
echo "== output of the first job"
first=${ids%% *}
"$BIN/dirac" job output "$first" --dir "$DATA/output" >/dev/null && cat "$DATA/output/$first/std.out"
echo "== data: upload README.md to the local SE, tag it, find it, list it"
"$BIN/dirac" dput --overwrite README.md demo/README.md >/dev/null
"$BIN/dirac" --token "$("$BIN/diracd" token --data-dir "$DATA" --user admin --group dteam_admin)" \
  dmeta add-field kind string --file 2>/dev/null || true
"$BIN/dirac" dmeta set demo/README.md kind=doc 2>/dev/null || true
"$BIN/dirac" dfind . 'kind=doc or Name=README.md'
"$BIN/dirac" dls -l demo
cat <<MSG

diracd is serving on $LISTEN. Try, in another terminal:
  export DIRAC_CONFIG=$PWD/$DATA/client.yaml
  $BIN/dirac job search --where Status=Waiting
  $BIN/dirac job history 1
  $BIN/dirac job submit examples/hello.jdl; $BIN/dirac pilot list
  $BIN/dirac dls -r; $BIN/dirac dget demo/README.md -D /tmp; $BIN/dirac dse
Press Ctrl-C to stop.
MSG
wait "$pid"
