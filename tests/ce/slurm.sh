#!/usr/bin/env bash
# Start a real one-node Slurm cluster (munged, slurmctld, slurmd) for the
# slurm CE tests.
#
#   tests/ce/slurm.sh DIR
#
# Slurm's daemons bind every interface, so this refuses to run outside a
# private network namespace; run it inside `unshare -n -m -u` (own network,
# mounts and host name) together with the client. It sets the host name to
# "diracnode", adds 10.213.0.1/32 to lo (Slurm resolves with AI_ADDRCONFIG,
# which ignores loopback addresses: with only 127.0.0.1 nothing resolves),
# writes DIR/slurm.conf (partition "debug", 2 CPUs, no accounting) and a
# munge socket of its own, and returns once a job runs. Export
# SLURM_CONF=DIR/slurm.conf for sbatch/squeue/scontrol. Stop the daemons by
# killing the PIDs in DIR/*.pid. Needs root; install with scripts/ce-servers.sh.
set -euo pipefail
if [ $# -ne 1 ]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
other="$(ip -o link show | awk -F': ' '{sub(/@.*/, "", $2); print $2}' | grep -vx lo || true)"
if [ -n "$other" ]; then
  echo "refusing to start Slurm (binds all interfaces) next to interfaces: $(echo $other);" \
       "use 'unshare -n -m -u'" >&2
  exit 1
fi
mkdir -p "$1"
DIR="$(cd "$1" && pwd)"
ip link set lo up
ip addr add 10.213.0.1/32 dev lo 2>/dev/null || true
hostname diracnode
mkdir -p "$DIR/state" "$DIR/spool" "$DIR/munge"
chmod 700 "$DIR/munge"
# A key of its own: any 32+ random bytes.
head -c 64 /dev/urandom > "$DIR/munge/key"
chmod 600 "$DIR/munge/key"
munged --force --socket="$DIR/munge/sock" --key-file="$DIR/munge/key" \
  --pid-file="$DIR/munge.pid" --log-file="$DIR/munge.log" --seed-file="$DIR/munge/seed"
cat > "$DIR/slurm.conf" <<CFG
ClusterName=dirac
SlurmctldHost=diracnode(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/sock
CredType=cred/munge
MailProg=/bin/true
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MinJobAge=600
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
NodeName=diracnode NodeAddr=127.0.0.1 CPUs=2 RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=diracnode Default=YES MaxTime=INFINITE State=UP
CFG
export SLURM_CONF="$DIR/slurm.conf"
slurmctld -i
slurmd
for _ in $(seq 1 150); do
  if sinfo -h -o '%T' 2>/dev/null | grep -qx idle; then
    exit 0
  fi
  sleep 0.2
done
echo "the Slurm node never became idle" >&2
tail -20 "$DIR/slurmctld.log" "$DIR/slurmd.log" >&2 || true
exit 1
