#!/usr/bin/env bash
# Start a real ARC CE (NorduGrid A-REX 6 from Debian, fork back end) whose REST
# interface answers on https://localhost:PORT/arex/rest/1.0/ (and on
# 127.0.0.1) for the ARC CE tests. API notes: tests/ce/ARC-REST.md.
#
#   tests/ce/arex.sh DIR PORT
#
# A-REX listens on EVERY interface (its TCP listener takes a port, no
# address), so this refuses to run in a network namespace with interfaces
# other than lo: run it inside `unshare -n -m` together with the client. It
# brings lo up. Needs root. Install with scripts/arc-server.sh.
#
# Under DIR, kept and reused when the script runs again on the same DIR:
#   ca.pem ca.key               throw-away CA (EC P-256); certificates/ is the
#                               x509_cert_dir A-REX trusts (<hash>.0 copy of it)
#   hostcert.pem hostkey.pem    CN=localhost, SAN DNS:localhost, IP:127.0.0.1
#   usercert.pem userkey.pem    client certificate /O=dirac-rs/CN=dirac-test-user,
#                               unencrypted key
# made afresh on each start: arc.conf (and its parsed form arex.cfg), arex.xml
# and arex-ws.xml (the two daemons), control/ session/ tmp/ (1777) log/, and
# arc-location/ (see below). The client's DN is mapped to the unprivileged local
# user $AREX_USER (default "arcjob", created with useradd if missing; A-REX does
# not run jobs as root): fork jobs run as that user in session/<job id>/.
#
# Knobs (environment):
#   AREX_INFO_PERIOD  whole seconds the information provider pauses between
#                     runs (default 2; A-REX's own default is 60). REST job
#                     states come from its per-job documents: they lag A-REX by
#                     up to this plus one provider run (1-2 s).
#   AREX_TLS_CURVE    the single ECDHE group the server accepts (default
#                     secp521r1, A-REX 6's default; rustls has no P-521, so a
#                     rustls client needs prime256v1 or secp384r1).
#   AREX_LOGLEVEL     0-5 (default 3 = INFO); logs in DIR/log/.
#   AREX_USER         local user the DN is mapped to (default arcjob; not root).
#
# Returns once GET /arex/rest/1.0/info answers 200 with a GLUE2 document, with
# the client certificate. Writes DIR/env, KEY=value lines without spaces (it
# can be sourced): CA CADIR CERT KEY URL REST DN JOB_USER AREX_PID WS_PID. The
# last line of stdout is "AREX_PID WS_PID": the job-processing daemon and the
# HTTPS front end (also in DIR/arex.pid and DIR/arex-ws.pid while they run).
# Stop both with kill: they keep the namespace alive until then, and the first
# takes up to ~10 s to exit (wait for /proc/PID to go before reusing DIR).
set -euo pipefail
# Running and not a zombie (kill -0 also succeeds on an unreaped zombie).
alive() { [ -n "$1" ] && [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
# Report a failed start with the logs and arc.conf's check, stop what started.
fail() {
  echo "$1" >&2
  tail -n 20 "$DIR"/log/*.out "$DIR/log/arex.log" "$DIR/log/ws-interface.log" >&2 2>/dev/null || true
  /usr/lib/arc/arc-config-check --config "$DIR/arc.conf" --skip-warnings >&2 2>&1 || true
  for p in arex arex-ws; do
    pid="$(cat "$DIR/$p.pid" 2>/dev/null || true)"
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  done
  exit 1
}
# arched daemonizes, then writes its pid file (and removes it when it exits).
wait_pidfile() {
  for _ in $(seq 1 100); do
    [ -s "$DIR/$1.pid" ] && return 0
    sleep 0.05
  done
  fail "arched ($1) did not start (no $DIR/$1.pid)"
}
if [ $# -ne 2 ]; then
  echo "usage: $0 DIR PORT" >&2
  exit 2
fi
other="$(ip -o link show | awk -F': ' '{sub(/@.*/, "", $2); print $2}' | grep -vx lo || true)"
if [ -n "$other" ]; then
  echo "refusing to start A-REX (binds all interfaces) next to interfaces: $(echo $other);" \
       "use 'unshare -n -m'" >&2
  exit 1
fi
for f in /usr/sbin/arched /usr/lib/arc/arcconfig-parser /usr/share/arc/scan-fork-job; do
  if [ ! -x "$f" ]; then
    echo "$f missing: run scripts/arc-server.sh" >&2
    exit 1
  fi
done
mkdir -p "$1"
DIR="$(cd "$1" && pwd)"
PORT="$2"
AREX_USER="${AREX_USER:-arcjob}"
AREX_LOGLEVEL="${AREX_LOGLEVEL:-3}"
INFO_PERIOD="${AREX_INFO_PERIOD:-2}"
TLS_CURVE="${AREX_TLS_CURVE:-secp521r1}"
case "$INFO_PERIOD" in ''|*[!0-9]*) echo "AREX_INFO_PERIOD must be whole seconds" >&2; exit 2;; esac
case "$AREX_LOGLEVEL" in 0) LOGLEVEL=FATAL;; 1) LOGLEVEL=ERROR;; 2) LOGLEVEL=WARNING;; 4) LOGLEVEL=VERBOSE;; 5) LOGLEVEL=DEBUG;; *) LOGLEVEL=INFO;; esac
ip link set lo up

# A-REX refuses to process jobs owned by uid 0 (the job stays ACCEPTING for
# ever), so the client DN maps to an unprivileged user, created here once.
# (Tolerates a parallel start creating it at the same time.)
for _ in 1 2 3 4 5; do
  id -u "$AREX_USER" >/dev/null 2>&1 && break
  useradd --system --user-group --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin "$AREX_USER" 2>/dev/null || sleep 0.5
done
if ! id -u "$AREX_USER" >/dev/null 2>&1; then
  echo "could not create the local user $AREX_USER" >&2
  exit 1
fi
if [ "$(id -u "$AREX_USER")" = 0 ]; then
  echo "AREX_USER must not be root: A-REX does not run jobs as uid 0" >&2
  exit 1
fi
# The job user must reach its session directory under DIR: give "others" the
# search (x, not read) bit on DIR's ancestors that lack it, e.g. the 0700
# directory made by mktemp -d or Rust's tempfile::tempdir().
d="$(dirname "$DIR")"
while [ "$d" != / ]; do
  if [ "$(( 0$(stat -c %a "$d") & 1 ))" = 0 ]; then
    echo "note: chmod o+x $d (so $AREX_USER can reach $DIR)" >&2
    chmod o+x "$d"
  fi
  d="$(dirname "$d")"
done
chmod 755 "$DIR"

for p in arex arex-ws; do
  if [ -s "$DIR/$p.pid" ] && alive "$(cat "$DIR/$p.pid")"; then
    echo "A-REX already running for $DIR (pid $(cat "$DIR/$p.pid"))" >&2
    exit 1
  fi
  rm -f "$DIR/$p.pid"
done

# --- test PKI -----------------------------------------------------------------
if [ ! -s "$DIR/ca.pem" ] || [ ! -s "$DIR/hostcert.pem" ] || [ ! -s "$DIR/usercert.pem" ]; then
  (
    cd "$DIR"
    umask 077
    EC=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    openssl req -x509 -new "${EC[@]}" -keyout ca.key -out ca.pem -days 3650 \
      -subj "/O=dirac-rs/CN=dirac-rs test CA" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -addext "subjectKeyIdentifier=hash" 2>/dev/null
    openssl req -new "${EC[@]}" -keyout hostkey.pem -out host.csr \
      -subj "/O=dirac-rs/CN=localhost" 2>/dev/null
    cat > host.ext <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=DNS:localhost,IP:127.0.0.1
EOF
    openssl x509 -req -in host.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
      -out hostcert.pem -days 3650 -extfile host.ext 2>/dev/null
    openssl req -new "${EC[@]}" -keyout userkey.pem -out user.csr \
      -subj "/O=dirac-rs/CN=dirac-test-user" 2>/dev/null
    cat > user.ext <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth
EOF
    openssl x509 -req -in user.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
      -out usercert.pem -days 3650 -extfile user.ext 2>/dev/null
    rm -f host.csr user.csr host.ext user.ext
  )
fi
chmod 644 "$DIR/ca.pem" "$DIR/hostcert.pem" "$DIR/usercert.pem"
chmod 600 "$DIR/ca.key" "$DIR/hostkey.pem" "$DIR/userkey.pem"
rm -rf "$DIR/certificates"
mkdir -p "$DIR/certificates" "$DIR/vomsdir"
h="$(openssl x509 -in "$DIR/ca.pem" -noout -hash)"
cp "$DIR/ca.pem" "$DIR/certificates/$h.0"
# ARC's OpenSSL verification reads "/O=.../CN=..." DNs (slash form, as A-REX
# logs them and authgroup "subject" expects them).
DN="$(openssl x509 -in "$DIR/usercert.pem" -noout -subject -nameopt compat | sed 's/^subject=//')"

# --- configuration ------------------------------------------------------------
rm -rf "$DIR/control" "$DIR/session" "$DIR/tmp" "$DIR/log" "$DIR/env"
mkdir -p "$DIR/control" "$DIR/session" "$DIR/tmp" "$DIR/log"
chmod 1777 "$DIR/tmp"
# DH parameters for the TLS front end (packaged A-REX makes a 4096-bit set in
# the background when control/dhparam.pem is missing: minutes of CPU). The
# RFC 7919 group is instant and passes "openssl dhparam -check".
openssl genpkey -genparam -algorithm DH -pkeyopt group:ffdhe2048 -out "$DIR/control/dhparam.pem"
chmod 600 "$DIR/control/dhparam.pem"

cat > "$DIR/arc.conf" <<EOF
# Generated by tests/ce/arex.sh
[common]
hostname = localhost
x509_host_key = $DIR/hostkey.pem
x509_host_cert = $DIR/hostcert.pem
x509_cert_dir = $DIR/certificates
x509_voms_dir = $DIR/vomsdir

[authgroup:diracusers]
subject = $DN

[mapping]
map_to_user = diracusers $AREX_USER:$(id -gn "$AREX_USER")

[lrms]
lrms = fork

[arex]
user = root
controldir = $DIR/control
sessiondir = $DIR/session
tmpdir = $DIR/tmp
pidfile = $DIR/arex.pid
logfile = $DIR/log/arex.log
joblog = $DIR/log/arex-jobs.log
helperlog = $DIR/log/job.helper.errors
# seconds between the job loop's polls (default 180; new jobs and state
# changes are also signalled directly)
wakeupperiod = 2
loglevel = $AREX_LOGLEVEL

[arex/ws]
wsurl = https://localhost:$PORT/arex
logfile = $DIR/log/ws-interface.log
pidfile = $DIR/arex-ws.pid

[arex/ws/jobs]
allowaccess = diracusers

[infosys]
logfile = $DIR/log/infoprovider.log

[infosys/glue2]

[infosys/cluster]

[queue:fork]
EOF

export ARC_CONFIG="$DIR/arc.conf"
# Two daemons, as the packaged arc-arex-start and arc-arex-ws-start scripts run
# them (both read arex.cfg, arc.conf with the defaults filled in), but started
# here with our own arched XML: those scripts cannot set the information
# provider's period, and the one for the front end spends ~4 s in the config
# parser and arc-config-check (which runs below only when startup fails).
/usr/lib/arc/arcconfig-parser --config "$DIR/arc.conf" --runconfig "$DIR/arex.cfg" --save
# The fork back end notices finished (and killed) jobs only through the
# scan-fork-job helper: one pass, "sleep 10", exit, and A-REX restarts it at
# most every 10 s. cancel-fork-job signals only the job's wrapper shell
# (the job's own processes live on, e.g. a killed "sleep 300" keeps running
# and keeps the namespace alive) and waits 5 s between SIGTERM and SIGKILL.
# A-REX runs these scripts from $ARC_LOCATION/share/arc, so its daemon gets a
# private ARC_LOCATION: links to the packaged files, a cancel-fork-job that
# signals the wrapper's whole process tree and waits 1 s, and a scan-fork-job
# that repeats the packaged pass every second while its parent (A-REX) lives.
LOC="$DIR/arc-location"
rm -rf "$LOC"
mkdir -p "$LOC/share/arc"
ln -s /usr/lib "$LOC/lib"
ln -s /usr/sbin "$LOC/sbin"
ln -s /usr/bin "$LOC/bin"
for f in /usr/share/arc/*; do ln -s "$f" "$LOC/share/arc/"; done
rm "$LOC/share/arc/scan-fork-job" "$LOC/share/arc/cancel-fork-job"
sed -e '1a tree_pids() { for c in $(pgrep -P "$1"); do tree_pids "$c"; done; echo "$1"; }' \
    -e 's/^\([[:space:]]*\)kill -TERM \$joboption_jobid$/\1pids=$(tree_pids $joboption_jobid); kill -TERM $pids/' \
    -e 's/^\([[:space:]]*\)sleep 5$/\1sleep 1/' \
    -e 's/^\([[:space:]]*\)kill -KILL \$joboption_jobid$/\1kill -KILL $pids 2>\/dev\/null/' \
    /usr/share/arc/cancel-fork-job > "$LOC/share/arc/cancel-fork-job"
sed 's/^sleep 10$/sleep 1/' /usr/share/arc/scan-fork-job > "$LOC/share/arc/scan-fork-job-pass"
cat > "$LOC/share/arc/scan-fork-job" <<'EOF'
#!/bin/sh
while kill -0 "$PPID" 2>/dev/null; do
  "$(dirname "$0")/scan-fork-job-pass" "$@"
done
EOF
chmod 755 "$LOC/share/arc/scan-fork-job" "$LOC/share/arc/scan-fork-job-pass" "$LOC/share/arc/cancel-fork-job"
if ! grep -qx 'sleep 1' "$LOC/share/arc/scan-fork-job-pass" ||
   ! grep -q "kill -KILL \$pids" "$LOC/share/arc/cancel-fork-job"; then
  echo "note: /usr/share/arc/{scan,cancel}-fork-job changed: check $LOC/share/arc" >&2
fi
cat > "$DIR/arex.xml" <<EOF
<?xml version="1.0"?>
<ArcConfig xmlns="http://www.nordugrid.org/schemas/ArcConfig/2007"
           xmlns:arex="http://www.nordugrid.org/schemas/a-rex/Config">
  <Server>
    <PidFile>$DIR/arex.pid</PidFile>
    <Logger><File>$DIR/log/arex.log</File><Level>$LOGLEVEL</Level></Logger>
    <Watchdog>false</Watchdog>
  </Server>
  <ModuleManager><Path>/usr/lib/arc/</Path></ModuleManager>
  <Plugins><Name>arex</Name></Plugins>
  <Chain>
    <Service name="a-rex" id="a-rex">
      <arex:endpoint>https://localhost:$PORT/arex</arex:endpoint>
      <arex:gmconfig>$DIR/arex.cfg</arex:gmconfig>
      <arex:InfoproviderWakeupPeriod>$((INFO_PERIOD * 10))</arex:InfoproviderWakeupPeriod>
    </Service>
  </Chain>
</ArcConfig>
EOF
# Job processing: grid manager, LRMS scripts, information provider. The REST
# job status is read from the per-job GLUE2 document the provider rewrites on
# each run; InfoproviderWakeupPeriod (tenths of a second, default 600) is its
# pause between runs. arched daemonizes and writes the pid file itself.
if ! ( cd "$DIR/log" &&
       X509_USER_CERT="$DIR/hostcert.pem" X509_USER_KEY="$DIR/hostkey.pem" \
       X509_CERT_DIR="$DIR/certificates" TMPDIR="$DIR/tmp" HOSTNAME=localhost \
       MALLOC_ARENA_MAX=2 ARC_LOCATION="$LOC" /usr/sbin/arched -c "$DIR/arex.xml" \
       </dev/null >>"$DIR/log/arex-start.out" 2>&1 ); then
  fail "arched (job processing) failed to start"
fi
wait_pidfile arex
# The HTTPS/REST front end, with the chain arc-arex-ws-start derives from
# arc.conf: TCP on all interfaces, TLS with the host certificate and the
# private CA directory (client certificates optional at this level), HTTP,
# SOAP for POST (non-SOAP bodies pass through), A-REX with "gmrun none" (only
# the first daemon processes jobs); the legacy handlers match the client DN to
# [authgroup:diracusers] and map it by [mapping] (unmapped clients get 403).
# Only one ECDHE group is offered (A-REX calls SSL_CTX_set_tmp_ecdh), see
# AREX_TLS_CURVE.
cat > "$DIR/arex-ws.xml" <<EOF
<?xml version="1.0"?>
<ArcConfig xmlns="http://www.nordugrid.org/schemas/ArcConfig/2007"
           xmlns:tcp="http://www.nordugrid.org/schemas/ArcMCCTCP/2007"
           xmlns:arex="http://www.nordugrid.org/schemas/a-rex/Config">
  <Server>
    <PidFile>$DIR/arex-ws.pid</PidFile>
    <Logger><File>$DIR/log/ws-interface.log</File><Level>$LOGLEVEL</Level></Logger>
    <Watchdog>false</Watchdog>
  </Server>
  <ModuleManager><Path>/usr/lib/arc/</Path></ModuleManager>
  <Plugins><Name>mcctcp</Name></Plugins>
  <Plugins><Name>mcctls</Name></Plugins>
  <Plugins><Name>mcchttp</Name></Plugins>
  <Plugins><Name>mccsoap</Name></Plugins>
  <Plugins><Name>arex</Name></Plugins>
  <Plugins><Name>identitymap</Name></Plugins>
  <Plugins><Name>arcshc</Name></Plugins>
  <Plugins><Name>arcshclegacy</Name></Plugins>
  <Chain>
    <Component name="tcp.service" id="tcp">
      <next id="tls"/>
      <tcp:Listen><tcp:Port>$PORT</tcp:Port></tcp:Listen>
    </Component>
    <Component name="tls.service" id="tls">
      <next id="http"/>
      <KeyPath>$DIR/hostkey.pem</KeyPath>
      <CertificatePath>$DIR/hostcert.pem</CertificatePath>
      <CACertificatesDir PolicyGlobus="true">$DIR/certificates</CACertificatesDir>
      <VOMSProcessing>standard</VOMSProcessing>
      <ClientAuthn>false</ClientAuthn>
      <Ciphers>HIGH:!eNULL:!aNULL</Ciphers>
      <Protocol>TLSv1.2 TLSv1.3</Protocol>
      <DHParamFile>$DIR/control/dhparam.pem</DHParamFile>
      <Curve>$TLS_CURVE</Curve>
    </Component>
    <Component name="http.service" id="http">
      <next id="soap">POST</next>
      <next id="plexer"/>
      <SecHandler name="arclegacy.handler" event="incoming">
        <ConfigFile>$DIR/arex.cfg</ConfigFile>
      </SecHandler>
    </Component>
    <Component name="soap.service" id="soap">
      <next id="plexer"/>
      <ContinueNonSOAP>true</ContinueNonSOAP>
    </Component>
    <Plexer name="plexer.service" id="plexer">
      <next id="a-rex">^/arex</next>
    </Plexer>
    <Service name="a-rex" id="a-rex">
      <SecHandler name="arclegacy.map" event="incoming">
        <ConfigBlock><ConfigFile>$DIR/arex.cfg</ConfigFile><BlockName>mapping</BlockName></ConfigBlock>
      </SecHandler>
      <arex:endpoint>https://localhost:$PORT/arex</arex:endpoint>
      <arex:gmconfig>$DIR/arex.cfg</arex:gmconfig>
      <arex:gmrun>none</arex:gmrun>
      <arex:InfosysInterfaceMaxClients>1</arex:InfosysInterfaceMaxClients>
      <arex:JobControlInterfaceMaxClients>100</arex:JobControlInterfaceMaxClients>
      <arex:DataTransferInterfaceMaxClients>100</arex:DataTransferInterfaceMaxClients>
    </Service>
  </Chain>
</ArcConfig>
EOF
if ! ( cd "$DIR/log" &&
       X509_USER_CERT="$DIR/hostcert.pem" X509_USER_KEY="$DIR/hostkey.pem" \
       X509_CERT_DIR="$DIR/certificates" TMPDIR="$DIR/tmp" HOSTNAME=localhost \
       MALLOC_ARENA_MAX=2 /usr/sbin/arched -c "$DIR/arex-ws.xml" \
       </dev/null >>"$DIR/log/arex-ws-start.out" 2>&1 ); then
  fail "arched (REST front end) failed to start"
fi
wait_pidfile arex-ws

URL="https://localhost:$PORT/arex"
code=""
for _ in $(seq 1 300); do
  code="$(curl -s -o "$DIR/info.probe" -w '%{http_code}' --max-time 5 -H 'Accept: application/json' \
    --cacert "$DIR/ca.pem" --cert "$DIR/usercert.pem" --key "$DIR/userkey.pem" \
    "$URL/rest/1.0/info" || true)"
  # 200 with an empty document until the provider has written its first one.
  if [ "$code" = 200 ] && grep -q '"ComputingService"' "$DIR/info.probe" &&
     [ -s "$DIR/arex.pid" ] && [ -s "$DIR/arex-ws.pid" ]; then
    rm -f "$DIR/info.probe"
    AREX_PID="$(cat "$DIR/arex.pid")"
    WS_PID="$(cat "$DIR/arex-ws.pid")"
    cat > "$DIR/env" <<EOF
CA=$DIR/ca.pem
CADIR=$DIR/certificates
CERT=$DIR/usercert.pem
KEY=$DIR/userkey.pem
URL=$URL
REST=$URL/rest/1.0
DN=$DN
JOB_USER=$AREX_USER
AREX_PID=$AREX_PID
WS_PID=$WS_PID
EOF
    echo "$AREX_PID $WS_PID"
    exit 0
  fi
  for p in arex arex-ws; do
    pid="$(cat "$DIR/$p.pid" 2>/dev/null || true)"
    if [ -z "$pid" ] || ! alive "$pid"; then
      fail "A-REX ($p) exited during startup"
    fi
  done
  sleep 0.2
done
fail "A-REX REST did not answer 200 with a document on $URL/rest/1.0/info within 60 s (last: $code)"
