#!/usr/bin/env bash
# Install the HTCondor Python bindings (PyPI package `htcondor`, which ships the
# `htcondor2` module with HTCondor's own submit-description parser) into the
# test-tools virtualenv (idempotent, quiet on success). No HTCondor daemons or
# command-line tools exist in any registry we can reach, so the HTCondorCE tests
# run against the scripted stand-in in tests/ce/condor-standin/, which uses
# these bindings to parse submit descriptions with the real parser.
set -euo pipefail
TOOLS="${DIRAC_TEST_TOOLS:-$HOME/.cache/dirac-test-tools}"
VENV="$TOOLS/venv"
# Bump the stamp (and the pin) together.
HTCONDOR_VERSION="25.14.1"
STAMP="$VENV/.dirac-htcondor-$HTCONDOR_VERSION"
if [ -f "$STAMP" ] && "$VENV/bin/python" -c 'import htcondor2' >/dev/null 2>&1; then
  exit 0
fi
mkdir -p "$TOOLS"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! "$VENV/bin/pip" install --quiet --disable-pip-version-check \
      "htcondor==$HTCONDOR_VERSION" >"$log" 2>&1; then
  cat "$log" >&2
  exit 1
fi
if ! "$VENV/bin/python" -c 'import htcondor2' >"$log" 2>&1; then
  echo "condor-tools.sh: htcondor $HTCONDOR_VERSION installed but 'import htcondor2' fails:" >&2
  cat "$log" >&2
  exit 1
fi
touch "$STAMP"
