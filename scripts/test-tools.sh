#!/usr/bin/env bash
# Install the tools the end-to-end tests use into ~/.cache/dirac-test-tools
# (idempotent): a Python virtualenv with grpcio (reflection, health checking)
# and moto (an S3 server), and a Node OIDC provider.
set -euo pipefail
TOOLS="${DIRAC_TEST_TOOLS:-$HOME/.cache/dirac-test-tools}"
VENV="$TOOLS/venv"
STAMP="$VENV/.dirac-tools-1"
if [ ! -f "$STAMP" ]; then
  mkdir -p "$TOOLS"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check grpcio grpcio-reflection grpcio-health-checking protobuf
  touch "$STAMP"
fi
# Real storage servers (nginx WebDAV, XRootD) for the storage-element tests.
"$(dirname "$0")/storage-servers.sh"
# Real batch-system peers (sshd, Slurm with munge) for the CE tests.
"$(dirname "$0")/ce-servers.sh"
# Keystone (its own venv) for the OpenStack CE tests.
"$(dirname "$0")/openstack-tools.sh"
# kmock (a Kubernetes API emulator) for the Kubernetes CE tests.
"$(dirname "$0")/kube-tools.sh"
# HTCondor's submit-description parser (PyPI bindings) for the HTCondorCE
# stand-in, and a real ARC CE (A-REX) for the ARC tests.
"$(dirname "$0")/condor-tools.sh"
"$(dirname "$0")/arc-server.sh"
# An S3 server (moto) for the storage-element tests.
if [ ! -f "$VENV/.dirac-s3-1" ]; then
  "$VENV/bin/pip" install --quiet --disable-pip-version-check 'moto[server]'
  touch "$VENV/.dirac-s3-1"
fi
# A real OIDC identity provider (panva's oidc-provider) for the federation tests.
IDP="$TOOLS/idp"
HERE="$(cd "$(dirname "$0")/.." && pwd)"
if [ ! -f "$IDP/.dirac-idp-2" ]; then
  mkdir -p "$IDP"
  cp "$HERE/tests/idp/package.json" "$IDP/"
  (cd "$IDP" && npm install --silent --no-audit --no-fund)
  touch "$IDP/.dirac-idp-2"
fi
