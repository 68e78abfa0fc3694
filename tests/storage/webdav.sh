#!/usr/bin/env bash
# Start a real WebDAV server (nginx + dav_ext) over HTTPS on 127.0.0.1:PORT.
#
#   tests/storage/webdav.sh DIR PORT
#
# Everything lives under DIR:
#   DIR/ca.pem, DIR/ca.key        self-made test CA (clients trust DIR/ca.pem)
#   DIR/server.pem, DIR/server.key  cert for DNS:localhost + IP:127.0.0.1
#   DIR/root/                      document root (owned by www-data)
#   DIR/nginx.conf, nginx.pid, error.log, access.log, tmp/
# The certificates are kept (reused) when the script runs again on the same DIR.
# No authentication: any request (with or without a Bearer token) is allowed.
# Returns once the server answers; prints the nginx master PID as the last line
# of stdout. Stop it with: kill "$PID"  (or: nginx -p DIR -c DIR/nginx.conf -s quit)
# Needs root (nginx drops its workers to www-data). Install with
# scripts/storage-servers.sh.
set -euo pipefail
# Running and not a zombie (kill -0 also succeeds on an unreaped zombie).
alive() { [ -n "$1" ] && [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
if [ $# -ne 2 ]; then
  echo "usage: $0 DIR PORT" >&2
  exit 2
fi
mkdir -p "$1"
DIR="$(cd "$1" && pwd)"
PORT="$2"

MOD=""
for d in /usr/lib/nginx/modules /usr/share/nginx/modules; do
  if [ -f "$d/ngx_http_dav_ext_module.so" ]; then MOD="$d/ngx_http_dav_ext_module.so"; break; fi
done
if [ -z "$MOD" ]; then
  echo "ngx_http_dav_ext_module.so not found: run scripts/storage-servers.sh (nginx-extras)" >&2
  exit 1
fi

# A stale pid file from a previous (killed) run would confuse the wait below.
if [ -s "$DIR/nginx.pid" ] && alive "$(cat "$DIR/nginx.pid")"; then
  echo "nginx already running for $DIR (pid $(cat "$DIR/nginx.pid"))" >&2
  exit 1
fi
rm -f "$DIR/nginx.pid"

# The server's unprivileged user must be able to reach DIR: give "others" the
# search (x, not read) bit on DIR's ancestors that lack it, e.g. the 0700
# directory made by mktemp -d or Rust's tempfile::tempdir().
d="$(dirname "$DIR")"
while [ "$d" != / ]; do
  if [ "$(( 0$(stat -c %a "$d") & 1 ))" = 0 ]; then
    echo "note: chmod o+x $d (so the server user can reach $DIR)" >&2
    chmod o+x "$d"
  fi
  d="$(dirname "$d")"
done
# The workers run as www-data: DIR must be traversable (mktemp -d makes it 0700).
chmod 755 "$DIR"
mkdir -p "$DIR/root" "$DIR/tmp"
chown www-data:www-data "$DIR/root" "$DIR/tmp"
if ! runuser -u www-data -- test -w "$DIR/root"; then
  echo "nginx's user www-data cannot write $DIR/root: is a parent directory of $DIR private (e.g. /root)?" >&2
  exit 1
fi

# The bearer token /token/ demands, written to DIR/bearer-token for clients.
TOKEN="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
printf '%s\n' "$TOKEN" > "$DIR/bearer-token"

# --- test PKI -----------------------------------------------------------------
if [ ! -s "$DIR/ca.pem" ] || [ ! -s "$DIR/server.pem" ]; then
  (
    cd "$DIR"
    umask 077
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout ca.key -out ca.pem -days 3650 -subj "/CN=dirac-rs test CA" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -addext "subjectKeyIdentifier=hash" 2>/dev/null
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout server.key -out server.csr -subj "/CN=localhost" 2>/dev/null
    cat > server.ext <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EOF
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
      -days 825 -sha256 -extfile server.ext -out server.pem 2>/dev/null
    rm -f server.csr server.ext ca.srl
    chmod 644 ca.pem server.pem
  )
fi

# --- nginx configuration ------------------------------------------------------
cat > "$DIR/nginx.conf" <<EOF
load_module $MOD;
user www-data;
worker_processes 1;
daemon on;
pid $DIR/nginx.pid;
error_log $DIR/error.log warn;

events { worker_connections 256; }

http {
    access_log $DIR/access.log;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    server_tokens off;

    # Request bodies go to disk in DIR/tmp (same filesystem as the root so a
    # finished PUT is a rename, not a copy); nothing large is held in memory.
    client_body_temp_path $DIR/tmp/body;
    client_body_buffer_size 128k;
    client_max_body_size 0;
    client_body_timeout 300s;
    send_timeout 300s;
    proxy_temp_path $DIR/tmp/proxy;
    fastcgi_temp_path $DIR/tmp/fastcgi;
    uwsgi_temp_path $DIR/tmp/uwsgi;
    scgi_temp_path $DIR/tmp/scgi;

    server {
        listen 127.0.0.1:$PORT ssl;
        server_name localhost 127.0.0.1;
        ssl_certificate $DIR/server.pem;
        ssl_certificate_key $DIR/server.key;
        ssl_protocols TLSv1.2 TLSv1.3;

        root $DIR/root;
        # Bearer tokens: /token/ needs "Authorization: Bearer <DIR/bearer-token>".
        location /token/ {
            if (\$http_authorization != "Bearer $TOKEN") { return 401; }
            dav_methods PUT DELETE MKCOL COPY MOVE;
            dav_ext_methods PROPFIND OPTIONS;
            create_full_put_path on;
            dav_access user:rw group:rw all:r;
        }
        location / {
            dav_methods PUT DELETE MKCOL COPY MOVE;
            dav_ext_methods PROPFIND OPTIONS;
            create_full_put_path on;
            dav_access user:rw group:rw all:r;
            autoindex on;
        }
    }
}
EOF


# -e: the error log used before the config is read (default /var/log/nginx).
if ! nginx -p "$DIR" -e "$DIR/error.log" -c "$DIR/nginx.conf" >/dev/null 2>"$DIR/start.err"; then
  cat "$DIR/start.err" >&2
  exit 1
fi

for _ in $(seq 1 100); do
  if [ -s "$DIR/nginx.pid" ] &&
     curl -s -o /dev/null --max-time 2 --cacert "$DIR/ca.pem" "https://127.0.0.1:$PORT/"; then
    cat "$DIR/nginx.pid"
    exit 0
  fi
  sleep 0.1
done
echo "nginx did not answer on https://127.0.0.1:$PORT/ within 10 s" >&2
tail -n 20 "$DIR/error.log" >&2 || true
[ -s "$DIR/nginx.pid" ] && kill "$(cat "$DIR/nginx.pid")" 2>/dev/null || true
exit 1
