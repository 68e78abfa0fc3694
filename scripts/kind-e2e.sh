#!/usr/bin/env bash
# The real-cluster end-to-end recipe: build the images, create a kind
# cluster, install MariaDB and the chart, apply a ComputingElement (this
# cluster itself: pilots as Kubernetes Jobs) and a SiteDirector, submit a
# job through envoy with the dirac CLI, and wait for it to be Done.
#
# Needs docker, kind, kubectl, helm, cargo and openssl. It CANNOT run on the
# project's development machines (no container engine, no cluster there): it
# runs in hosted CI (.github/workflows/kind-e2e.yml) or on a workstation, and
# is otherwise kept correct by review. Every step names what it waits for;
# on failure the pods' state and logs are printed.
#
#   scripts/kind-e2e.sh            # build, install, run, keep the cluster
#   KEEP=0 scripts/kind-e2e.sh     # delete the cluster at the end
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER="${CLUSTER:-dirac-e2e}"
TAG="${TAG:-e2e}"
NS=dirac
KEEP="${KEEP:-1}"
WORK="$(mktemp -d)"
PF_PID=""

for tool in docker kind kubectl helm cargo openssl; do
  command -v "$tool" >/dev/null || { echo "kind-e2e: $tool is required" >&2; exit 1; }
done

cleanup() {
  status=$?
  [ -n "$PF_PID" ] && kill "$PF_PID" 2>/dev/null || true
  if [ "$status" -ne 0 ]; then
    echo "kind-e2e: FAILED; the installation as it stands:" >&2
    kubectl -n "$NS" get pods,jobs,deployments,cronjobs,agents,sitedirectors,computingelements -o wide >&2 || true
    for d in wms dms rms auth envoy operator; do
      kubectl -n "$NS" logs "deploy/dirac-dirac-$d" --tail=50 >&2 2>/dev/null || true
    done
    kubectl -n "$NS" logs -l app.kubernetes.io/managed-by=dirac-operator --tail=50 --prefix >&2 2>/dev/null || true
  fi
  if [ "$KEEP" = 0 ]; then kind delete cluster --name "$CLUSTER" || true; fi
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT

echo "== images"
for bin in diracd dirac-operator; do
  docker build -f docker/Dockerfile --build-arg BIN="$bin" -t "dirac-rs/$bin:$TAG" .
done
cargo build --release --locked --bin dirac
DIRAC="$PWD/target/release/dirac"

echo "== cluster"
if ! kind get clusters | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --wait 180s
fi
kind load docker-image --name "$CLUSTER" "dirac-rs/diracd:$TAG" "dirac-rs/dirac-operator:$TAG"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -

echo "== MariaDB (a plain Deployment: the chart expects an external database)"
kubectl -n "$NS" apply -f - <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata: {name: mariadb}
spec:
  selector: {matchLabels: {app: mariadb}}
  template:
    metadata: {labels: {app: mariadb}}
    spec:
      containers:
        - name: mariadb
          image: docker.io/library/mariadb:11.4
          env:
            - {name: MARIADB_ROOT_PASSWORD, value: e2e}
            - {name: MARIADB_DATABASE, value: dirac}
          ports: [{containerPort: 3306}]
          readinessProbe:
            exec: {command: ["healthcheck.sh", "--connect", "--innodb_initialized"]}
            periodSeconds: 3
---
apiVersion: v1
kind: Service
metadata: {name: mariadb}
spec:
  selector: {app: mariadb}
  ports: [{port: 3306}]
YAML
kubectl -n "$NS" rollout status deploy/mariadb --timeout=300s

echo "== the chart"
ENVOY_URL="http://dirac-dirac-envoy.$NS.svc.cluster.local:8443"
python3 tests/k8s/kind_values.py "$WORK/values.yaml" "$ENVOY_URL" "$TAG"
helm upgrade --install dirac charts/dirac -n "$NS" -f "$WORK/values.yaml" --wait --timeout 10m

echo "== pilots as Jobs in this cluster"
# (the chart's operator.workloadServiceAccount names the account made here)
sed "s/:e2e\$/:$TAG/" tests/k8s/kind-resources.yaml | kubectl -n "$NS" apply -f -
kubectl -n "$NS" wait --for=condition=Ready sitedirector/e2e --timeout=180s

echo "== a job through envoy"
TOKEN="$(kubectl -n "$NS" exec deploy/dirac-dirac-auth -- /usr/local/bin/app token --user alice \
  --config /etc/dirac/dirac.yaml --data-dir /tmp)"
kubectl -n "$NS" port-forward svc/dirac-dirac-envoy 18443:8443 >"$WORK/port-forward.log" 2>&1 &
PF_PID=$!
for _ in $(seq 50); do
  (exec 3<>/dev/tcp/127.0.0.1/18443) 2>/dev/null && break
  sleep 0.2
done
export DIRAC_URL=http://127.0.0.1:18443 DIRAC_TOKEN="$TOKEN"
ID="$("$DIRAC" --json job submit examples/hello.jdl | python3 -c 'import json,sys; print(json.load(sys.stdin)["jobs"][0]["job_id"])')"
echo "submitted job $ID"
deadline=$((SECONDS + 600))
while :; do
  STATUS="$("$DIRAC" --json job status "$ID" | python3 -c 'import json,sys; print(json.load(sys.stdin)["jobs"][0]["status"])')"
  echo "job $ID: $STATUS"
  case "$STATUS" in
    Done) break ;;
    Failed|Killed|Deleted) echo "kind-e2e: job $ID ended $STATUS" >&2; exit 1 ;;
  esac
  [ "$SECONDS" -lt "$deadline" ] || { echo "kind-e2e: job $ID not Done after 10 minutes" >&2; exit 1; }
  sleep 5
done
echo "kind-e2e: job $ID Done through envoy on a real cluster"
