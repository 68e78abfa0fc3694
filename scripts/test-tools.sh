#!/usr/bin/env bash
# Install the Python tools the end-to-end tests use into a cached virtualenv
# (idempotent): grpcio with reflection and health checking.
set -euo pipefail
TOOLS="${DIRAC_TEST_TOOLS:-$HOME/.cache/dirac-test-tools}"
VENV="$TOOLS/venv"
STAMP="$VENV/.dirac-tools-1"
[ -f "$STAMP" ] && exit 0
mkdir -p "$TOOLS"
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check grpcio grpcio-reflection grpcio-health-checking protobuf
touch "$STAMP"
