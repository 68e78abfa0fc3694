#!/usr/bin/env bash
# Start a real OpenSSH server on 127.0.0.1:PORT for the ssh CE tests.
#
#   tests/ce/sshd.sh DIR PORT
#
# Makes a host key and a client key under DIR, authorizes the client key for
# the current user, writes DIR/known_hosts for [127.0.0.1]:PORT, starts
# sshd (listening on loopback only) and returns once it accepts a login with
# the client key (DIR/id_ed25519). Prints the server PID as the last line;
# stop it with kill. Needs root (sshd); install with scripts/ce-servers.sh.
set -euo pipefail
if [ $# -ne 2 ]; then
  echo "usage: $0 DIR PORT" >&2
  exit 2
fi
mkdir -p "$1"
DIR="$(cd "$1" && pwd)"
PORT="$2"
SSHD="$(command -v sshd || echo /usr/sbin/sshd)"
chmod 700 "$DIR"
[ -f "$DIR/host_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -f "$DIR/host_ed25519"
[ -f "$DIR/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -f "$DIR/id_ed25519"
cp "$DIR/id_ed25519.pub" "$DIR/authorized_keys"
chmod 600 "$DIR/authorized_keys"
echo "[127.0.0.1]:$PORT $(cut -d' ' -f1,2 "$DIR/host_ed25519.pub")" > "$DIR/known_hosts"
# Privilege separation directory sshd insists on.
mkdir -p /run/sshd
chmod 755 /run/sshd
cat > "$DIR/sshd_config" <<CFG
ListenAddress 127.0.0.1:$PORT
HostKey $DIR/host_ed25519
PidFile $DIR/sshd.pid
AuthorizedKeysFile $DIR/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
AcceptEnv LANG
Subsystem sftp internal-sftp
CFG
"$SSHD" -t -f "$DIR/sshd_config"
"$SSHD" -f "$DIR/sshd_config" -E "$DIR/sshd.log"
for _ in $(seq 1 100); do
  if ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$DIR/known_hosts" \
       -o IdentitiesOnly=yes -i "$DIR/id_ed25519" -p "$PORT" 127.0.0.1 true 2>/dev/null; then
    cat "$DIR/sshd.pid"
    exit 0
  fi
  sleep 0.1
done
echo "sshd did not accept a login on 127.0.0.1:$PORT" >&2
cat "$DIR/sshd.log" >&2 || true
exit 1
