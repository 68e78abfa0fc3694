#!/usr/bin/env bash
# Start a real OpenStack Keystone (identity API v3) for the OpenStack CE
# tests, on 127.0.0.1:PORT only.
#
#   tests/ce/keystone.sh DIR PORT NOVA_PORT
#
# Everything lives under DIR: keystone.conf, the sqlite database, the fernet
# token and credential keys, keystone.log, keystone.pid (the server's PID;
# kill it to stop Keystone) and env, which is written last with
#
#   KEYSTONE_URL=http://127.0.0.1:PORT/v3
#   PROJECT=dirac  PROJECT_DOMAIN=Default
#   USER=pilot-factory  USER_DOMAIN=Default  PASSWORD=...
#   APP_CRED_ID=...  APP_CRED_SECRET=...   (an application credential of
#                                           pilot-factory on project dirac)
#   ADMIN_PASSWORD=...                     (user "admin", domain Default)
#
# one per line, shell-sourceable. pilot-factory has the "member" role on
# dirac. The service catalog holds identity (http://127.0.0.1:PORT/v3) and
# compute (http://127.0.0.1:NOVA_PORT/v2.1, public, region RegionOne): start
# tests/ce/nova_standin.py on NOVA_PORT. Returns once POST /v3/auth/tokens
# works with both the password and the application-credential method and the
# compute endpoint is in the catalog. Installs Keystone first when needed
# (scripts/openstack-tools.sh).
#
# Start-up is kept short (no keystone-manage run here: each one imports all
# of keystone): the database is a copy of the installer's template, already
# migrated (db_sync) and bootstrapped (admin, roles, RegionOne, identity
# service); this script then gives admin a fresh random password and points
# the identity endpoint at PORT through the API. The fernet token and
# credential keys are written directly (each key is 32 random bytes, url-safe
# base64, one file per key, "0" the staged one) instead of by
# `keystone-manage fernet_setup` / `credential_setup`. Passwords are hashed
# with bcrypt at 4 rounds (test-only).
set -euo pipefail
if [ $# -ne 3 ]; then
  echo "usage: $0 DIR PORT NOVA_PORT" >&2
  exit 2
fi
HERE="$(cd "$(dirname "$0")" && pwd)"
PORT="$2"
NOVA_PORT="$3"
"$HERE/../../scripts/openstack-tools.sh"
VENV="${DIRAC_TEST_TOOLS:-$HOME/.cache/dirac-test-tools}/keystone-venv"
PY="$VENV/bin/python"
mkdir -p "$1"
DIR="$(cd "$1" && pwd)"
URL="http://127.0.0.1:$PORT/v3"
rm -f "$DIR/env"

if "$PY" - "$PORT" <<'EOF'
import socket, sys
s = socket.socket()
try:
    s.connect(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
EOF
then
  echo "keystone.sh: 127.0.0.1:$PORT is already in use" >&2
  exit 1
fi

ADMIN_PASSWORD="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
PASSWORD="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"

cat > "$DIR/keystone.conf" <<CONF
[DEFAULT]
use_stderr = true
debug = false
[database]
connection = sqlite:///$DIR/keystone.db
[token]
provider = fernet
expiration = 7200
[fernet_tokens]
key_repository = $DIR/fernet-keys
# Keystone also reads the receipts' repository (default /etc/keystone/…,
# which a fresh machine lacks): the same keys.
[fernet_receipts]
key_repository = $DIR/fernet-keys
[credential]
key_repository = $DIR/credential-keys
[identity]
# Test-only: the cheapest bcrypt cost (default 12 costs ~0.25 s per check).
password_hash_rounds = 4
CONF

rm -f "$DIR/keystone.db"
cp "$VENV/share/dirac/keystone-template.db" "$DIR/keystone.db"
# shellcheck disable=SC1091
. "$VENV/share/dirac/keystone-template.env"
"$PY" - "$DIR" <<'EOF'
import base64, os, sys
for repo in ("fernet-keys", "credential-keys"):
    path = os.path.join(sys.argv[1], repo)
    os.makedirs(path, mode=0o700, exist_ok=True)
    for name in os.listdir(path):
        os.unlink(os.path.join(path, name))
    for index in ("0", "1"):
        fd = os.open(os.path.join(path, index), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, base64.urlsafe_b64encode(os.urandom(32)))
        os.close(fd)
EOF

# The WSGI server: stdlib wsgiref, one thread per request, loopback only.
# sys.argv is cleared before keystone is imported (oslo.config would parse it).
cat > "$DIR/keystone_server.py" <<'EOF'
import socketserver
import sys
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

port = int(sys.argv[1])
sys.argv = sys.argv[:1]

from keystone.wsgi.api import application  # noqa: E402


class Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64


class Handler(WSGIRequestHandler):
    def log_message(self, fmt, *args):
        sys.stderr.write("wsgi %s - %s\n" % (self.address_string(), fmt % args))


make_server("127.0.0.1", port, application,
            server_class=Server, handler_class=Handler).serve_forever()
EOF

export OS_KEYSTONE_CONFIG_FILES="$DIR/keystone.conf"
unset OS_KEYSTONE_CONFIG_DIR
rm -f "$DIR/keystone.pid"
"$PY" "$DIR/keystone_server.py" "$PORT" </dev/null >"$DIR/keystone.log" 2>&1 &
SERVER=$!
echo "$SERVER" > "$DIR/keystone.pid"
stop_on_error() {
  kill "$SERVER" 2>/dev/null || true
  echo "keystone.sh: failed; last lines of $DIR/keystone.log:" >&2
  tail -n 30 "$DIR/keystone.log" >&2 || true
}
trap stop_on_error ERR

# Through the API: the identity endpoint, project, user, role, catalog and
# application credential, admin's new password, then both authentication
# methods as a client would use them.
"$PY" - "$DIR" "$URL" "$NOVA_PORT" "$TEMPLATE_ADMIN_PASSWORD" "$ADMIN_PASSWORD" "$PASSWORD" \
  "$SERVER" <<'EOF'
import json, os, sys, time, urllib.error, urllib.request

dir_, url, nova_port, template_pw, admin_pw, user_pw, server_pid = sys.argv[1:]


def call(method, path, body=None, token=None, ok=(200, 201, 204)):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method=method)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("X-Auth-Token", token)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
            return resp.status, resp.headers, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        raise SystemExit("%s %s -> %s %s" % (method, path, e.code, e.read()[:500]))


deadline = time.time() + 60
while True:
    try:
        os.kill(int(server_pid), 0)
    except OSError:
        raise SystemExit("keystone server exited")
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            if resp.status == 200:
                break
    except (urllib.error.URLError, OSError):
        pass
    if time.time() > deadline:
        raise SystemExit("keystone did not answer on %s within 60 s" % url)
    time.sleep(0.1)


def password_auth(name, password, scope):
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": name, "domain": {"name": "Default"}, "password": password}}},
        "scope": scope}}
    _, headers, tok = call("POST", "/auth/tokens", body)
    return headers["X-Subject-Token"], tok["token"]


admin, admin_info = password_auth("admin", template_pw, {"system": {"all": True}})
admin_id = admin_info["user"]["id"]
_, _, services = call("GET", "/services?type=identity", token=admin)
for svc in services["services"]:
    _, _, eps = call("GET", "/endpoints?service_id=%s" % svc["id"], token=admin)
    for ep in eps["endpoints"]:
        call("PATCH", "/endpoints/%s" % ep["id"], {"endpoint": {"url": url}}, admin)
_, _, roles = call("GET", "/roles?name=member", token=admin)
member = roles["roles"][0]["id"]
_, _, project = call("POST", "/projects", {"project": {
    "name": "dirac", "domain_id": "default", "description": "DIRAC pilots"}}, admin)
project_id = project["project"]["id"]
_, _, user = call("POST", "/users", {"user": {
    "name": "pilot-factory", "domain_id": "default", "password": user_pw,
    "default_project_id": project_id}}, admin)
user_id = user["user"]["id"]
call("PUT", "/projects/%s/users/%s/roles/%s" % (project_id, user_id, member), token=admin)
_, _, service = call("POST", "/services", {"service": {
    "type": "compute", "name": "nova", "description": "Nova stand-in", "enabled": True}}, admin)
nova_url = "http://127.0.0.1:%s/v2.1" % nova_port
call("POST", "/endpoints", {"endpoint": {
    "service_id": service["service"]["id"], "interface": "public",
    "region_id": "RegionOne", "url": nova_url, "enabled": True}}, admin)

project_scope = {"project": {"name": "dirac", "domain": {"name": "Default"}}}
user_token, _ = password_auth("pilot-factory", user_pw, project_scope)
_, _, cred = call("POST", "/users/%s/application_credentials" % user_id, {
    "application_credential": {"name": "dirac-ce",
                               "description": "DIRAC OpenStack CE tests"}}, user_token)
cred = cred["application_credential"]

# A password change revokes admin's tokens: last of admin's calls.
call("PATCH", "/users/%s" % admin_id, {"user": {"password": admin_pw}}, admin)
password_auth("admin", admin_pw, {"system": {"all": True}})

# Both methods, as the connector will use them; the catalog must list compute.
_, _, tok = call("POST", "/auth/tokens", {"auth": {"identity": {
    "methods": ["application_credential"],
    "application_credential": {"id": cred["id"], "secret": cred["secret"]}}}})
for t in (tok["token"], password_auth("pilot-factory", user_pw, project_scope)[1]):
    eps = {s["type"]: [e["url"] for e in s["endpoints"] if e["interface"] == "public"]
           for s in t["catalog"]}
    if eps.get("compute") != [nova_url] or eps.get("identity") != [url] \
            or t["project"]["id"] != project_id:
        raise SystemExit("unexpected token: %r" % t)

env = {
    "KEYSTONE_URL": url, "PROJECT": "dirac", "PROJECT_DOMAIN": "Default",
    "USER": "pilot-factory", "USER_DOMAIN": "Default", "PASSWORD": user_pw,
    "APP_CRED_ID": cred["id"], "APP_CRED_SECRET": cred["secret"],
    "ADMIN_PASSWORD": admin_pw,
}
tmp = os.path.join(dir_, "env.tmp")
fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as f:
    f.write("".join("%s=%s\n" % kv for kv in env.items()))
os.replace(tmp, os.path.join(dir_, "env"))
EOF
trap - ERR
