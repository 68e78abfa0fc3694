#!/usr/bin/env bash
# Install a real OpenStack Keystone (identity, v3 API) for the OpenStack CE
# tests, idempotently, into a virtualenv of its own:
#
#   ${DIRAC_TEST_TOOLS:-$HOME/.cache/dirac-test-tools}/keystone-venv
#
# Keystone drags in ~95 packages (oslo.*, SQLAlchemy, eventlet, ...) that
# must not meet the other test tools' packages, hence the separate venv. The
# whole dependency set is pinned to the versions verified with keystone
# 30.0.0 on CPython 3.11, so CI installs what was tested.
#
# It also prepares a template database for tests/ce/keystone.sh, so that a
# test start runs no keystone-manage at all (each run imports all of keystone,
# ~2.5-3.5 s on the 2-core machines): `keystone-manage db_sync` (the schema)
# and `keystone-manage bootstrap` (domain Default, project admin, user admin,
# roles admin/manager/member/reader/service, region RegionOne, the identity
# service) into $VENV/share/dirac/keystone-template.db, with a random admin
# password kept beside it in keystone-template.env. keystone.sh copies the
# database, gives admin a fresh password and points the identity endpoint at
# its own port through the API. The template holds no keys (fernet keys are
# made per start) and no other secret.
#
# Quiet on success; prints pip's / keystone-manage's output on failure.
# Nova has no installer: tests/ce/nova_standin.py is a stdlib stand-in.
set -euo pipefail
TOOLS="${DIRAC_TEST_TOOLS:-$HOME/.cache/dirac-test-tools}"
VENV="$TOOLS/keystone-venv"
KEYSTONE_VERSION=30.0.0
STAMP="$VENV/.dirac-keystone-$KEYSTONE_VERSION-1"
SHARE="$VENV/share/dirac"
TEMPLATE_STAMP="$SHARE/.keystone-template-2"
[ -f "$STAMP" ] && [ -f "$TEMPLATE_STAMP" ] && exit 0

log="$(mktemp)"
work="$(mktemp -d)"
trap 'rm -rf "$log" "$work"' EXIT
fail() {
  echo "openstack-tools: $1 failed:" >&2
  cat "$log" >&2
  exit 1
}

if [ ! -f "$STAMP" ]; then
  mkdir -p "$TOOLS"
  rm -rf "$VENV"
  python3 -m venv "$VENV" >"$log" 2>&1 || fail "python3 -m venv"

  # The set `pip install keystone==30.0.0` resolved to when this was verified.
  cat > "$work/constraints.txt" <<'PINS'
alembic==1.20.1
amqp==5.4.2
aniso8601==10.0.1
attrs==26.1.0
bcrypt==5.0.0
blinker==1.9.0
cachetools==8.0.1
certifi==2026.10.18
cffi==2.1.1
charset-normalizer==3.5.2
click==8.5.1
cryptography==50.0.2
debtcollector==3.1.0
decorator==5.3.1
defusedxml==0.7.1
dnspython==2.9.2
dogpile.cache==1.5.0
elementpath==4.8.0
eventlet==0.41.3
fasteners==0.20
Flask==3.1.3
Flask-RESTful==0.3.10
futurist==3.5.0
greenlet==3.5.6
idna==3.20
iso8601==2.1.0
itsdangerous==2.2.0
Jinja2==3.1.6
jsonschema==4.26.0
jsonschema-specifications==2025.9.1
keystone==30.0.0
keystoneauth1==5.18.1
keystonemiddleware==13.0.1
kombu==5.7.0
Mako==1.4.3
MarkupSafe==3.0.4
msgpack==1.2.4
netaddr==1.3.0
oauthlib==4.0.1
os-service-types==1.9.0
oslo.cache==4.3.0
oslo.concurrency==7.6.1
oslo.config==10.7.0
oslo.context==6.5.0
oslo.db==18.1.1
oslo.i18n==6.9.0
oslo.log==8.3.2
oslo.messaging==18.3.1
oslo.metrics==0.17.0
oslo.middleware==8.2.0
oslo.policy==6.0.1
oslo.serialization==5.11.0
oslo.service==4.8.0
oslo.upgradecheck==2.8.0
oslo.utils==10.2.0
osprofiler==4.4.0
packaging==26.3
Paste==3.10.1
PasteDeploy==3.1.0
pbr==7.1.3
prettytable==3.18.0
prometheus_client==0.26.0
psutil==7.2.2
pycadf==4.1.0
pycparser==3.12
PyJWT==2.15.1
pyOpenSSL==26.4.0
pyparsing==3.3.3
pysaml2==7.5.5
python-dateutil==4.0.0
python-keystoneclient==6.0.0
pytz==2026.6
PyYAML==6.0.3
referencing==0.37.0
repoze-lru==0.8
requests==2.34.2
rfc3986==2.0.0
Routes==2.5.1
rpds-py==2026.9.1
six==1.17.0
SQLAlchemy==2.1.9
statsd==4.0.1
stevedore==5.10.0
testresources==2.1.2
testscenarios==0.7.0
typing_extensions==4.16.0
tzdata==2026.6
urllib3==2.8.0
vine==5.1.0
wcwidth==0.9.4
WebOb==1.8.11
Werkzeug==3.1.9
wrapt==2.5.2
xmlschema==2.5.1
yappi==1.7.6
PINS
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    -c "$work/constraints.txt" "keystone==$KEYSTONE_VERSION" >"$log" 2>&1 \
    || fail "pip install keystone==$KEYSTONE_VERSION"

  touch "$STAMP"
fi

if [ ! -f "$TEMPLATE_STAMP" ]; then
  mkdir -p "$SHARE"
  rm -f "$SHARE"/keystone-template.* "$SHARE"/keystone-schema.db
  password="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
  # bootstrap reads the fernet key repository even though the template
  # keeps no key: throwaway keys in the work directory (never
  # /etc/keystone, which a fresh machine lacks).
  cat > "$work/keystone.conf" <<CONF
[database]
connection = sqlite:///$work/keystone.db
[fernet_tokens]
key_repository = $work/fernet-keys
[fernet_receipts]
key_repository = $work/fernet-keys
[credential]
key_repository = $work/credential-keys
[identity]
password_hash_rounds = 4
CONF
  for repo in fernet-keys credential-keys; do
    mkdir -m 700 "$work/$repo"
    for index in 0 1; do
      (umask 077 && head -c 32 /dev/urandom | base64 | tr '+/' '-_' > "$work/$repo/$index")
    done
  done
  "$VENV/bin/keystone-manage" --config-file "$work/keystone.conf" db_sync >"$log" 2>&1 \
    || fail "keystone-manage db_sync"
  "$VENV/bin/keystone-manage" --config-file "$work/keystone.conf" bootstrap \
    --bootstrap-password "$password" --bootstrap-region-id RegionOne \
    --bootstrap-public-url http://127.0.0.1:5000/v3 >"$log" 2>&1 \
    || fail "keystone-manage bootstrap"
  (umask 077 && echo "TEMPLATE_ADMIN_PASSWORD=$password" > "$SHARE/keystone-template.env")
  mv "$work/keystone.db" "$SHARE/keystone-template.db"
  touch "$TEMPLATE_STAMP"
fi
