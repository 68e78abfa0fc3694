#!/usr/bin/env bash
# Install the real batch-system peers the computing-element tests use
# (idempotent): OpenSSH server and client (the ssh CE), Slurm's controller,
# node daemon and client tools with munge (the slurm CE). Only touches apt
# when one of the binaries is missing. Start them with tests/ce/sshd.sh and
# tests/ce/slurm.sh; Debian's packages start nothing here (no init system),
# and where one did, the tests' own instances use their own ports anyway.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
PKGS=(openssh-server openssh-client slurmctld slurmd slurm-client munge iproute2 util-linux)
missing=0
for bin in sshd ssh ssh-keygen slurmctld slurmd sbatch squeue scontrol munged unshare ip; do
  command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || missing=1
done
if [ "$missing" = 1 ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo -E"
  log="$(mktemp)"
  trap 'rm -f "$log"' EXIT
  if ! { $SUDO apt-get update -qq && \
         $SUDO apt-get install -y -qq --no-install-recommends "${PKGS[@]}"; } >"$log" 2>&1; then
    cat "$log" >&2
    exit 1
  fi
fi
