#!/usr/bin/env python3
"""STAND-IN for OpenStack Nova -- this is NOT Nova.

A small, test-only imitation of the documented compute API v2.1 subset the
DIRAC OpenStack computing element uses, written from the public API
reference. A real Nova (scheduler, conductor, placement, a hypervisor,
Glance, Neutron, RabbitMQ, MySQL) is far too heavy for the test machines, so
"servers" here are local processes. Authentication is real: every API
request's X-Auth-Token is validated against a real Keystone (started by
tests/ce/keystone.sh) with GET /v3/auth/tokens, using the token itself as
both X-Auth-Token and X-Subject-Token (Keystone's policy lets a token's
owner validate it). Standard library only; listens on 127.0.0.1 only.

    python3 tests/ce/nova_standin.py --port PORT --keystone http://127.0.0.1:KPORT/v3 \
        --state-dir DIR [--build-seconds 1.0] [--pass-env NAME ...]

Once listening it writes DIR/port and prints one line to stdout. SIGTERM or
SIGINT kills every server's processes and exits.

API (microversion 2.1 only; a request for a higher one gets 406):
  GET    /  and /v2.1[/]                  version documents (no token, as Nova)
  POST   /v2.1/servers                    202 {"server": {"id", "links",
                                          "adminPass", ...}}, Location header
  GET    /v2.1/servers[/detail]           ?name=REGEX (re.search, like Nova's
                                          regexp filter) ?status=S (repeatable)
                                          ?limit=N ?marker=ID, newest first
  GET    /v2.1/servers/{id}
  DELETE /v2.1/servers/{id}               204; kills the server's process group
  POST   /v2.1/servers/{id}/action        {"os-getConsoleOutput": {"length": N}}
                                          -> 200 {"output": "..."} (last N
                                          lines; absent/null/-1 = all);
                                          {"os-stop": null} -> 202
  GET    /v2.1/flavors[/detail], /v2.1/flavors/{id}   fixed list below
An optional project-id path segment (/v2.1/{project_id}/servers) is accepted.
Servers are visible only to tokens scoped to the project that created them.
Errors use Nova's body shape {"badRequest": {"code": 400, "message": ...}}
(itemNotFound, forbidden, badMethod, ...); 401 uses keystonemiddleware's
{"error": {"code": 401, "title": "Unauthorized", "message": ...}}. Nothing
ever returns a traceback; bad JSON is a 400.

Booting. The server is BUILD for --build-seconds, then its user_data
(base64, gzip-compressed allowed) is "run" in DIR/servers/{id}/:
  * "#!..." (a script): written to user-data, made executable and executed
    directly (the kernel honours the #! line: bash, sh, python3, ...).
  * "#cloud-config": only this subset of cloud-init is honoured --
      write_files: path (required), content, encoding (text/plain, b64,
                   base64, gzip, gz, gz+b64, gzip+base64, ...),
                   permissions (octal string or YAML 1.1 octal int),
                   append; owner and defer are ignored.
      runcmd:      items are strings (inserted verbatim) or lists (shell-
                   quoted and joined), run in order by /bin/sh.
    Every other key is ignored (listed on the console). write_files paths
    are placed under DIR/servers/{id}/root/ (a write_files path /a/b lands
    in root/a/b); each of those exact paths appearing as a whole word in a
    runcmd item is rewritten to the placed file, so "bash /opt/pilot.sh"
    runs the written file (paths the script itself builds are not). The
    document may be JSON (JSON is YAML) or block YAML using mappings, "- "
    sequences, plain/'single'/"double" quoted scalars, [flow, lists],
    {flow: maps} and | / > block scalars (with -/+).
    Anchors, aliases, tags and multi-line plain scalars are not supported.
  * anything else (or none): nothing runs; the server stays ACTIVE until
    deleted or stopped.
The server is ACTIVE while the process runs and SHUTOFF when it exits (as a
VM that powers off at the end of its work; the rest of its process group is
killed then). stdout and stderr go to console.log, returned by
os-getConsoleOutput. Processes run as the stand-in's user ON THIS HOST (not
in a VM) with cwd DIR/servers/{id}/root, HOME DIR/servers/{id}/home, a
clean environment (PATH, LANG, HOME, NOVA_STANDIN_SERVER_ID,
NOVA_STANDIN_ROOT, plus each --pass-env NAME from the stand-in's own).
"""

import argparse
import base64
import binascii
import datetime
import gzip
import hashlib
import http.server
import json
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
import uuid

MICROVERSION = "2.1"
MAX_BODY = 1 << 20
MAX_USER_DATA = 65535  # Nova's limit on the base64 text

FLAVORS = [
    # id, name, ram MiB, disk GiB, vcpus
    ("1", "m1.tiny", 512, 1, 1),
    ("2", "m1.small", 2048, 20, 1),
    ("3", "m1.medium", 4096, 40, 2),
    ("4", "m1.large", 8192, 80, 4),
]

SERVER_KEYS = {
    "name", "imageRef", "flavorRef", "networks", "metadata", "user_data",
    "key_name", "security_groups", "min_count", "max_count",
    "availability_zone", "config_drive", "accessIPv4", "accessIPv6",
    "adminPass", "OS-DCF:diskConfig", "personality",
}

UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?"
                     r"[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")

FAULT_NAMES = {
    400: "badRequest", 401: "unauthorized", 403: "forbidden",
    404: "itemNotFound", 405: "badMethod", 406: "notAcceptable",
    409: "conflictingRequest", 411: "lengthRequired", 413: "overLimit",
    415: "badMediaType", 501: "notImplemented", 503: "serviceUnavailable",
}


class ApiError(Exception):
    def __init__(self, code, message, headers=None, body=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.body = body


def bad(message):
    return ApiError(400, message)


def now():
    return datetime.datetime.now(datetime.timezone.utc)


def iso(ts):
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ") if ts else None


def iso_usec(ts):
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%f") if ts else None


# --------------------------------------------------------------------------
# A YAML subset, enough for hand- or program-written #cloud-config documents.
# --------------------------------------------------------------------------
class YamlError(Exception):
    pass


_INT_RE = re.compile(r"^[-+]?(0|[1-9][0-9]*)$")
_OCT_RE = re.compile(r"^0[0-7]+$")
_FLOAT_RE = re.compile(r"^[-+]?([0-9]+\.[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$")


def _plain_scalar(s):
    # YAML 1.1 (as PyYAML, hence cloud-init, reads it).
    low = s.lower()
    if low in ("", "~", "null"):
        return None
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if _INT_RE.match(s):
        return int(s)
    if _OCT_RE.match(s):
        return int(s, 8)
    if _FLOAT_RE.match(s):
        return float(s)
    return s


def _strip_comment(s):
    """Drop a trailing ' # comment' outside quotes."""
    quote = None
    i = 0
    while i < len(s):
        c = s[i]
        if quote:
            if quote == '"' and c == "\\":
                i += 1
            elif c == quote:
                quote = None
        elif c in "'\"" and (i == 0 or s[i - 1] in " \t[{,:"):
            quote = c
        elif c == "#" and (i == 0 or s[i - 1] in " \t"):
            return s[:i].rstrip()
        i += 1
    return s.rstrip()


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", '"': '"',
            "/": "/", " ": " ", "a": "\a", "b": "\b", "e": "\x1b", "f": "\f",
            "v": "\v"}


class _Flow:
    """Parser for one quoted scalar or a flow collection inside a line."""

    def __init__(self, s):
        self.s = s
        self.i = 0

    def ws(self):
        while self.i < len(self.s) and self.s[self.i] in " \t":
            self.i += 1

    def value(self, stops):
        self.ws()
        if self.i >= len(self.s):
            raise YamlError("value expected")
        c = self.s[self.i]
        if c == "[":
            self.i += 1
            out = []
            self.ws()
            if self.s[self.i:self.i + 1] == "]":
                self.i += 1
                return out
            while True:
                out.append(self.value(",]"))
                self.ws()
                c = self.s[self.i:self.i + 1]
                self.i += 1
                if c == "]":
                    return out
                if c != ",":
                    raise YamlError("',' or ']' expected in flow sequence")
        if c == "{":
            self.i += 1
            out = {}
            self.ws()
            if self.s[self.i:self.i + 1] == "}":
                self.i += 1
                return out
            while True:
                key = self.value(":,}")
                self.ws()
                if self.s[self.i:self.i + 1] != ":":
                    raise YamlError("':' expected in flow mapping")
                self.i += 1
                out[key] = self.value(",}")
                self.ws()
                c = self.s[self.i:self.i + 1]
                self.i += 1
                if c == "}":
                    return out
                if c != ",":
                    raise YamlError("',' or '}' expected in flow mapping")
        if c == '"':
            self.i += 1
            buf = []
            while True:
                if self.i >= len(self.s):
                    raise YamlError("unterminated double-quoted scalar")
                c = self.s[self.i]
                self.i += 1
                if c == '"':
                    return "".join(buf)
                if c == "\\":
                    e = self.s[self.i:self.i + 1]
                    self.i += 1
                    if e in _ESCAPES:
                        buf.append(_ESCAPES[e])
                    elif e in ("x", "u", "U"):
                        n = {"x": 2, "u": 4, "U": 8}[e]
                        try:
                            buf.append(chr(int(self.s[self.i:self.i + n], 16)))
                        except ValueError:
                            raise YamlError("bad escape") from None
                        self.i += n
                    else:
                        raise YamlError("bad escape \\%s" % e)
                else:
                    buf.append(c)
        if c == "'":
            self.i += 1
            buf = []
            while True:
                if self.i >= len(self.s):
                    raise YamlError("unterminated single-quoted scalar")
                c = self.s[self.i]
                self.i += 1
                if c == "'":
                    if self.s[self.i:self.i + 1] == "'":
                        buf.append("'")
                        self.i += 1
                        continue
                    return "".join(buf)
                buf.append(c)
        if c in "&*!|>%@`":
            raise YamlError("unsupported YAML construct %r" % c)
        start = self.i
        while self.i < len(self.s):
            c = self.s[self.i]
            if c in stops and (c != ":" or self.s[self.i + 1:self.i + 2] in ("", " ")):
                break
            self.i += 1
        return _plain_scalar(self.s[start:self.i].strip())


def _inline(text):
    """A value written on one line: quoted, flow, or plain scalar."""
    text = _strip_comment(text).strip()
    if not text:
        return None
    if text[0] in "[{\"'":
        p = _Flow(text)
        v = p.value("")
        p.ws()
        if p.i != len(text):
            raise YamlError("trailing characters after %r" % text)
        return v
    if text[0] in "&*!%@`":
        raise YamlError("unsupported YAML construct %r" % text[0])
    return _plain_scalar(text)


def _split_key(content):
    """'key: rest' -> (key, rest), or None when content is no mapping entry."""
    if content[:1] in ("'", '"'):
        p = _Flow(content)
        try:
            key = p.value("")
        except YamlError:
            return None
        rest = content[p.i:]
        if rest == ":" or rest.startswith(": ") or rest.startswith(":\t"):
            return key, rest[1:]
        return None
    m = re.match(r"^([^#\[\]{},][^#]*?):(?:[ \t]+|$)(.*)$", content)
    if not m:
        return None
    return _plain_scalar(m.group(1).strip()), m.group(2)


class _Block:
    def __init__(self, text):
        if "\t" in "".join(l[:len(l) - len(l.lstrip())] for l in text.split("\n")):
            raise YamlError("tabs are not allowed for indentation")
        self.lines = text.split("\n")
        self.i = 0

    @staticmethod
    def indent(line):
        return len(line) - len(line.lstrip(" "))

    def skip(self):
        while self.i < len(self.lines):
            st = self.lines[self.i].strip()
            if st == "" or st.startswith("#") or st == "---":
                self.i += 1
                continue
            if st == "...":
                self.i = len(self.lines)
            break
        return self.i < len(self.lines)

    def node(self, min_indent):
        if not self.skip():
            return None
        line = self.lines[self.i]
        ind = self.indent(line)
        if ind < min_indent:
            return None
        content = line[ind:]
        if content == "-" or content.startswith("- "):
            return self.seq(ind)
        if _split_key(content) is not None:
            return self.mapping(ind)
        # A lone scalar (possibly a multi-line flow collection).
        self.i += 1
        return _inline(self.join_flow(content))

    def join_flow(self, text):
        """Join the following lines while [ { brackets are unbalanced."""
        def depth(s):
            d, q, j = 0, None, 0
            while j < len(s):
                c = s[j]
                if q:
                    if q == '"' and c == "\\":
                        j += 1
                    elif c == q:
                        q = None
                elif c in "'\"":
                    q = c
                elif c in "[{":
                    d += 1
                elif c in "]}":
                    d -= 1
                j += 1
            return d
        stripped = _strip_comment(text).strip()
        if stripped[:1] not in ("[", "{"):
            return text
        while depth(stripped) > 0 and self.i < len(self.lines):
            stripped += " " + _strip_comment(self.lines[self.i]).strip()
            self.i += 1
        return stripped

    def block_scalar(self, header, parent_indent):
        m = re.match(r"^([|>])([-+]?)([1-9]?)([-+]?)\s*(#.*)?$", header.strip())
        if not m:
            raise YamlError("bad block scalar header %r" % header)
        style = m.group(1)
        chomp = m.group(2) or m.group(4)
        explicit = int(m.group(3)) if m.group(3) else None
        raw = []
        while self.i < len(self.lines):
            line = self.lines[self.i]
            if line.strip() and self.indent(line) <= parent_indent:
                break
            raw.append(line)
            self.i += 1
        if explicit is not None:
            block_indent = parent_indent + explicit
        else:
            block_indent = next((self.indent(l) for l in raw if l.strip()), parent_indent + 1)
        body = [l[block_indent:] if len(l) >= block_indent else "" for l in raw]
        n = len(body)
        while n and body[n - 1].strip() == "":
            n -= 1
        content, blank_tail = body[:n], len(body) - n
        if not content:
            return ""
        if style == "|":
            text = "\n".join(content)
        else:
            # Folded: adjacent plain lines join with a space, a blank line is
            # a newline, more-indented lines keep their line breaks.
            out, prev_plain = [], False
            for l in content:
                if l.strip() == "":
                    out.append("\n")
                    prev_plain = False
                elif l[0] in " \t":
                    if out and not out[-1].endswith("\n"):
                        out.append("\n")
                    out.append(l + "\n")
                    prev_plain = False
                else:
                    if prev_plain:
                        out.append(" ")
                    out.append(l)
                    prev_plain = True
            text = "".join(out)
            if text.endswith("\n"):
                text = text[:-1]
        if chomp == "-":
            return text
        if chomp == "+":
            return text + "\n" * (1 + blank_tail)
        return text + "\n"

    def value_after(self, rest, ind, in_seq=False):
        """The value of a 'key:' or '- ' whose text after the indicator is rest."""
        stripped = _strip_comment(rest).strip()
        if stripped[:1] in ("|", ">"):
            return self.block_scalar(stripped, ind)
        if stripped:
            return _inline(self.join_flow(stripped))
        # Value on the following lines: deeper, or a same-level "- " list.
        if not self.skip():
            return None
        nxt = self.lines[self.i]
        nind = self.indent(nxt)
        if nind > ind:
            return self.node(nind)
        if nind == ind and not in_seq and (nxt[nind:] == "-" or nxt[nind:].startswith("- ")):
            return self.seq(ind)
        return None

    def mapping(self, ind):
        out = {}
        while self.skip():
            line = self.lines[self.i]
            cur = self.indent(line)
            if cur < ind:
                break
            if cur > ind:
                raise YamlError("bad indentation at line %d" % (self.i + 1))
            content = line[cur:]
            if content == "-" or content.startswith("- "):
                break
            kv = _split_key(content)
            if kv is None:
                raise YamlError("mapping entry expected at line %d" % (self.i + 1))
            self.i += 1
            key, rest = kv
            out[key] = self.value_after(rest, ind)
        return out

    def seq(self, ind):
        out = []
        while self.skip():
            line = self.lines[self.i]
            cur = self.indent(line)
            if cur != ind:
                if cur > ind:
                    raise YamlError("bad indentation at line %d" % (self.i + 1))
                break
            content = line[cur:]
            if not (content == "-" or content.startswith("- ")):
                break
            rest = content[1:]
            item = rest.lstrip(" ")
            col = ind + 1 + (len(rest) - len(item))
            if item and not item.startswith("#") and (
                    item == "-" or item.startswith("- ") or
                    (item[0] not in "[{" and _split_key(item) is not None)):
                # "- key: v" / "- - x": a nested collection starting on this line.
                self.lines[self.i] = " " * col + item
                out.append(self.node(col))
            else:
                self.i += 1
                out.append(self.value_after(item, ind, in_seq=True))
        return out


def parse_cloud_config(text):
    text = text.replace("\r\n", "\n")
    body = text.split("\n", 1)[1] if "\n" in text else ""
    try:
        return json.loads(body)
    except ValueError:
        pass
    doc = _Block(body).node(0)
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise YamlError("a cloud-config document must be a mapping")
    return doc


# --------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------
class Server:
    def __init__(self, sid, name, project, user, image, flavor, metadata,
                 user_data, networks, key_name, directory):
        self.id = sid
        self.name = name
        self.project = project
        self.user = user
        self.image = image
        self.flavor = flavor
        self.metadata = metadata
        self.user_data = user_data  # decoded bytes or None
        self.networks = networks
        self.key_name = key_name
        self.dir = directory
        self.created = now()
        self.updated = self.created
        self.launched = None
        self.vm_state = "building"
        self.task_state = "spawning"
        self.power_state = 0
        self.proc = None
        self.deleted = False
        self.cancel = threading.Event()

    @property
    def status(self):
        return {"building": "BUILD", "active": "ACTIVE", "stopped": "SHUTOFF",
                "error": "ERROR"}.get(self.vm_state, "UNKNOWN")

    @property
    def console(self):
        return os.path.join(self.dir, "console.log")

    def set_state(self, vm_state, power_state, task_state=None):
        self.vm_state = vm_state
        self.power_state = power_state
        self.task_state = task_state
        self.updated = now()


class Nova:
    def __init__(self, keystone, state_dir, build_seconds, pass_env):
        self.keystone = keystone.rstrip("/")
        if not self.keystone.endswith("/v3"):
            self.keystone += "/v3"
        self.state_dir = state_dir
        self.build_seconds = build_seconds
        self.pass_env = pass_env
        self.lock = threading.Lock()
        self.servers = {}

    # -- authentication ----------------------------------------------------
    def authenticate(self, token):
        unauthorized = ApiError(
            401, "The request you have made requires authentication.",
            {"WWW-Authenticate": 'Keystone uri="%s"' % self.keystone[:-3]},
            {"error": {"code": 401, "title": "Unauthorized",
                       "message": "The request you have made requires authentication."}})
        if not token:
            raise unauthorized
        req = urllib.request.Request(self.keystone + "/auth/tokens", method="GET")
        req.add_header("X-Auth-Token", token)
        req.add_header("X-Subject-Token", token)
        req.add_header("Accept", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=15) as resp:
                info = json.loads(resp.read())["token"]
        except urllib.error.HTTPError as e:
            if e.code in (401, 403, 404):
                raise unauthorized from None
            raise ApiError(503, "Keystone answered %d" % e.code) from None
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            raise ApiError(503, "The server is currently unavailable. "
                                "Please try your request at a later time.") from None
        project = info.get("project")
        if not project:
            raise ApiError(403, "Policy doesn't allow this request: the token "
                                "is not scoped to a project.")
        return {"project": project["id"], "user": info["user"]["id"],
                "roles": [r["name"] for r in info.get("roles", [])]}

    # -- helpers -----------------------------------------------------------
    def get(self, ctx, sid):
        with self.lock:
            s = self.servers.get(sid)
        if s is None or s.project != ctx["project"]:
            raise ApiError(404, "Instance %s could not be found." % sid)
        return s

    def links(self, base, kind, rid):
        return [{"rel": "self", "href": "%s/v2.1/%s/%s" % (base, kind, rid)},
                {"rel": "bookmark", "href": "%s/%s/%s" % (base, kind, rid)}]

    def brief(self, base, s):
        return {"id": s.id, "name": s.name, "links": self.links(base, "servers", s.id)}

    def detail(self, base, s):
        with self.lock:
            return {
                "id": s.id,
                "name": s.name,
                "status": s.status,
                "tenant_id": s.project,
                "user_id": s.user,
                "metadata": dict(s.metadata),
                "hostId": hashlib.sha224((s.project + "standin-host").encode()).hexdigest(),
                "image": {"id": s.image, "links": [
                    {"rel": "bookmark", "href": "%s/images/%s" % (base, s.image)}]},
                "flavor": {"id": s.flavor, "links": [
                    {"rel": "bookmark", "href": "%s/flavors/%s" % (base, s.flavor)}]},
                "created": iso(s.created),
                "updated": iso(s.updated),
                "addresses": {},
                "accessIPv4": "",
                "accessIPv6": "",
                "links": self.links(base, "servers", s.id),
                "key_name": s.key_name,
                "config_drive": "",
                "progress": 0,
                "security_groups": [{"name": "default"}],
                "OS-DCF:diskConfig": "MANUAL",
                "OS-EXT-AZ:availability_zone": "nova",
                "OS-EXT-STS:vm_state": s.vm_state,
                "OS-EXT-STS:task_state": s.task_state,
                "OS-EXT-STS:power_state": s.power_state,
                "OS-SRV-USG:launched_at": iso_usec(s.launched),
                "OS-SRV-USG:terminated_at": None,
                "os-extended-volumes:volumes_attached": [],
            }

    @staticmethod
    def flavor_doc(base, f, detail):
        fid, name, ram, disk, vcpus = f
        doc = {"id": fid, "name": name,
               "links": [{"rel": "self", "href": "%s/v2.1/flavors/%s" % (base, fid)},
                         {"rel": "bookmark", "href": "%s/flavors/%s" % (base, fid)}]}
        if detail:
            doc.update({"ram": ram, "disk": disk, "vcpus": vcpus, "swap": "",
                        "OS-FLV-EXT-DATA:ephemeral": 0,
                        "OS-FLV-DISABLED:disabled": False,
                        "os-flavor-access:is_public": True, "rxtx_factor": 1.0})
        return doc

    # -- create ------------------------------------------------------------
    def create(self, ctx, base, body):
        if not isinstance(body, dict) or not isinstance(body.get("server"), dict):
            raise bad("Invalid input for field/attribute server. Value: %s. "
                      "'server' is a required property" % _short(body))
        srv = body["server"]
        extra = sorted(set(srv) - SERVER_KEYS)
        if extra:
            raise bad("Invalid input for field/attribute server. Additional "
                      "properties are not allowed (%s %s unexpected)" % (
                          ", ".join(repr(k) for k in extra),
                          "was" if len(extra) == 1 else "were"))
        for field in ("name", "flavorRef", "imageRef"):
            if field not in srv:
                raise bad("Invalid input for field/attribute server. Value: %s. "
                          "'%s' is a required property" % (_short(srv), field))
        name = srv["name"]
        if not isinstance(name, str) or not 1 <= len(name) <= 255 or name != name.strip():
            raise bad("Invalid input for field/attribute name. Value: %s. "
                      "A non-empty name of at most 255 characters without "
                      "leading or trailing whitespace is required" % _short(name))
        image = srv["imageRef"]
        if not isinstance(image, str) or not UUID_RE.match(image.rsplit("/", 1)[-1]):
            raise bad("Invalid input for field/attribute imageRef. Value: %s. "
                      "%s is not a 'uuid'" % (_short(image), _short(image)))
        image = image.rsplit("/", 1)[-1]
        flavor = srv["flavorRef"]
        if not isinstance(flavor, (str, int)) or isinstance(flavor, bool) or str(flavor) == "":
            raise bad("Invalid input for field/attribute flavorRef. Value: %s." % _short(flavor))
        flavor = str(flavor).rsplit("/", 1)[-1]
        if flavor not in {f[0] for f in FLAVORS}:
            raise bad("Flavor %s could not be found." % flavor)
        networks = srv.get("networks", "auto")
        if isinstance(networks, list):
            for n in networks:
                if not isinstance(n, dict) or not (set(n) <= {"uuid", "port", "fixed_ip", "tag"}) \
                        or not ("uuid" in n or "port" in n):
                    raise bad("Invalid input for field/attribute networks. Value: %s." % _short(networks))
                for k in ("uuid", "port"):
                    if k in n and not (isinstance(n[k], str) and UUID_RE.match(n[k])):
                        raise bad("Bad networks format: network uuid is not in proper "
                                  "format (%s)" % _short(n[k]))
        elif networks not in ("auto", "none"):
            raise bad("Invalid input for field/attribute networks. Value: %s." % _short(networks))
        metadata = srv.get("metadata", {})
        if not isinstance(metadata, dict):
            raise bad("Invalid input for field/attribute metadata. Value: %s. "
                      "%s is not of type 'object'" % (_short(metadata), _short(metadata)))
        for k, v in metadata.items():
            if not 1 <= len(k) <= 255 or not isinstance(v, str) or len(v) > 255:
                raise bad("Invalid input for field/attribute metadata. Value: %s. "
                          "keys must be 1-255 and values 0-255 character strings"
                          % _short(metadata))
        if len(metadata) > 128:
            raise ApiError(403, "Quota exceeded for metadata_items: Requested %d, "
                                "but already used 0 of 128 metadata_items" % len(metadata))
        user_data = srv.get("user_data")
        decoded = None
        if user_data is not None:
            if not isinstance(user_data, str):
                raise bad("Invalid input for field/attribute user_data. Value: %s. "
                          "%s is not of type 'string'" % (_short(user_data), _short(user_data)))
            if len(user_data) > MAX_USER_DATA:
                raise bad("Invalid input for field/attribute user_data. Value: "
                          "(%d characters). is too long (maximum %d)" % (len(user_data), MAX_USER_DATA))
            try:
                decoded = base64.b64decode(user_data.replace("\n", "").replace("\r", ""),
                                           validate=True)
            except (binascii.Error, ValueError):
                raise bad("Invalid input for field/attribute user_data. Value: %s. "
                          "'%s' is not a 'base64'" % (_short(user_data), _short(user_data, 40))) from None
        key_name = srv.get("key_name")
        if key_name is not None and not isinstance(key_name, str):
            raise bad("Invalid input for field/attribute key_name. Value: %s." % _short(key_name))
        for k in ("min_count", "max_count"):
            v = srv.get(k, 1)
            if isinstance(v, str) and v.isdigit():
                v = int(v)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise bad("Invalid input for field/attribute %s. Value: %s." % (k, _short(v)))
            if v != 1:
                raise bad("This Nova stand-in creates one server per request (%s=%d)" % (k, v))

        sid = str(uuid.uuid4())
        directory = os.path.join(self.state_dir, "servers", sid)
        os.makedirs(os.path.join(directory, "root"), exist_ok=True)
        os.makedirs(os.path.join(directory, "home"), exist_ok=True)
        s = Server(sid, name, ctx["project"], ctx["user"], image, flavor,
                   dict(metadata), decoded, networks, key_name, directory)
        with self.lock:
            self.servers[sid] = s
        threading.Thread(target=self.boot, args=(s,), daemon=True,
                         name="boot-" + sid[:8]).start()
        admin_pass = srv.get("adminPass") or secrets.token_urlsafe(9)
        return sid, {"server": {
            "id": sid,
            "links": self.links(base, "servers", sid),
            "OS-DCF:diskConfig": "MANUAL",
            "security_groups": [{"name": "default"}],
            "adminPass": admin_pass,
        }}

    # -- the "hypervisor" ----------------------------------------------------
    def say(self, s, text):
        with open(s.console, "ab") as f:
            f.write(("[nova-standin] %s\n" % text).encode())

    def boot(self, s):
        try:
            self._boot(s)
        except Exception:  # never let a boot thread die silently
            traceback.print_exc()
            with self.lock:
                if not s.deleted:
                    s.set_state("error", 0)
            self.say(s, "internal error while booting; see the stand-in's log")

    def _boot(self, s):
        self.say(s, "booting server %s (%s)" % (s.id, s.name))
        if s.cancel.wait(self.build_seconds):
            return
        argv, note = self.prepare(s)
        with self.lock:
            if s.deleted or s.cancel.is_set():
                return
            s.launched = now()
            s.set_state("active", 1)
            if argv is None:
                self.say(s, note)
                return
            env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
                   "LANG": "C.UTF-8", "HOME": os.path.join(s.dir, "home"),
                   "NOVA_STANDIN_SERVER_ID": s.id,
                   "NOVA_STANDIN_ROOT": os.path.join(s.dir, "root")}
            for name in self.pass_env:
                if name in os.environ:
                    env[name] = os.environ[name]
            if note:
                self.say(s, note)
            console = open(s.console, "ab")
            try:
                s.proc = subprocess.Popen(
                    argv, cwd=os.path.join(s.dir, "root"), env=env,
                    stdin=subprocess.DEVNULL, stdout=console,
                    stderr=subprocess.STDOUT, start_new_session=True)
            except OSError as e:
                self.say(s, "cannot run user-data (%s; its first line is %r); powering off"
                         % (e.strerror or e, _first_line(s.user_data)))
                s.set_state("stopped", 4)
                return
            finally:
                console.close()
        code = s.proc.wait()
        _kill_group(s.proc.pid, signal.SIGKILL)
        with self.lock:
            if s.deleted or s.vm_state != "active":
                return
            s.set_state("stopped", 4)
        self.say(s, "user-data exited with status %d; powering off" % code)

    def prepare(self, s):
        """(argv, note) for the user data; argv None when nothing runs."""
        data = s.user_data
        if not data:
            return None, "no user-data; idling"
        if data[:2] == b"\x1f\x8b":
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError):
                return None, "user-data is not valid gzip; idling"
        if data.startswith(b"#!"):
            path = os.path.join(s.dir, "user-data")
            with open(path, "wb") as f:
                f.write(data)
            os.chmod(path, 0o700)
            return [path], "running user-data script"
        first = data.split(b"\n", 1)[0].strip()
        if first != b"#cloud-config":
            return None, "user-data is neither a #! script nor #cloud-config " \
                         "(first line %r); nothing to run; idling" % first[:40].decode("utf-8", "replace")
        try:
            doc = parse_cloud_config(data.decode("utf-8"))
            return self.cloud_config(s, doc)
        except (YamlError, UnicodeDecodeError, ValueError, TypeError, KeyError,
                binascii.Error, OSError) as e:
            # Fatal for the stand-in: power off with the reason on the console.
            self.say(s, "cannot use #cloud-config: %s" % e)
            return ["/bin/sh", "-c", "exit 1"], None

    def cloud_config(self, s, doc):
        if not isinstance(doc, dict):
            raise ValueError("a cloud-config document must be a mapping")
        root = os.path.join(s.dir, "root")
        ignored = sorted(str(k) for k in doc if k not in ("write_files", "runcmd"))
        if ignored:
            self.say(s, "cloud-config keys ignored by the stand-in: %s" % ", ".join(ignored))
        placed = {}
        for entry in doc.get("write_files") or []:
            if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
                raise ValueError("write_files entries need a 'path'")
            path = entry["path"]
            content = entry.get("content", "")
            if content is None:
                content = ""
            if not isinstance(content, (str, bytes)):
                content = str(content)
            raw = content.encode() if isinstance(content, str) else content
            enc = str(entry.get("encoding", "text/plain")).lower()
            if enc in ("b64", "base64", "gz+b64", "gzip+b64", "gz+base64", "gzip+base64"):
                raw = base64.b64decode(raw)
            if enc in ("gz", "gzip", "gz+b64", "gzip+b64", "gz+base64", "gzip+base64"):
                raw = gzip.decompress(raw)
            target = os.path.join(root, path.lstrip("/"))
            if os.path.commonpath([os.path.realpath(root),
                                   os.path.realpath(target)]) != os.path.realpath(root):
                raise ValueError("write_files path %r leaves the server's root" % path)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "ab" if entry.get("append") else "wb") as f:
                f.write(raw)
            perms = entry.get("permissions", "0644")
            mode = perms if isinstance(perms, int) else int(str(perms), 8)
            os.chmod(target, mode)
            placed[path] = target
            self.say(s, "write_files: %s -> %s" % (path, target))
        cmds = doc.get("runcmd") or []
        if not isinstance(cmds, list):
            raise ValueError("runcmd must be a list")
        if not cmds:
            return None, "cloud-config has no runcmd; idling"
        order = sorted((p for p in placed if p.startswith("/")), key=len, reverse=True)
        pattern = re.compile(r"(?<![\w./-])(%s)(?![\w./-])" % "|".join(
            re.escape(p) for p in order)) if order else None

        def rewrite(text):
            return pattern.sub(lambda m: placed[m.group(1)], text) if pattern else text

        lines = ["#!/bin/sh"]
        for c in cmds:
            if isinstance(c, list):
                lines.append(shlex.join(rewrite(str(a)) for a in c))
            elif isinstance(c, str):
                lines.append(rewrite(c))
            else:
                raise ValueError("runcmd items must be strings or lists")
        script = os.path.join(s.dir, "runcmd.sh")
        with open(script, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(script, 0o700)
        return ["/bin/sh", script], "running cloud-config runcmd (%d commands)" % len(cmds)

    def stop(self, s, deleting):
        with self.lock:
            s.cancel.set()
            if deleting:
                s.deleted = True
                self.servers.pop(s.id, None)
            elif s.vm_state in ("active", "building"):
                s.set_state("stopped", 4)
            proc = s.proc
        if proc is not None and proc.poll() is None:
            _kill_group(proc.pid, signal.SIGTERM)

            def reap():
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
                _kill_group(proc.pid, signal.SIGKILL)
            threading.Thread(target=reap, daemon=True).start()
        if not deleting:
            self.say(s, "stopped by os-stop")

    def shutdown(self):
        with self.lock:
            procs = [s.proc for s in self.servers.values() if s.proc is not None]
            for s in self.servers.values():
                s.cancel.set()
        for p in procs:
            if p.poll() is None:
                _kill_group(p.pid, signal.SIGKILL)


def _kill_group(pid, sig):
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _first_line(data):
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError):
            pass
    return data.split(b"\n", 1)[0][:80].decode("utf-8", "replace")


def _short(v, limit=80):
    text = json.dumps(v) if not isinstance(v, str) else v
    return text if len(text) <= limit else text[:limit] + "..."


# --------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------
def version_doc(base):
    return {"id": "v2.1", "status": "CURRENT", "version": MICROVERSION,
            "min_version": "2.1", "updated": "2013-07-23T11:33:21Z",
            "links": [{"rel": "self", "href": base + "/v2.1/"}],
            "media-types": [{"base": "application/json",
                             "type": "application/vnd.openstack.compute+json;version=2.1"}]}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "nova-standin"

    def version_string(self):
        return self.server_version
    nova = None  # set in main()

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (time.strftime("%H:%M:%S"), fmt % args))

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_PATCH(self):
        self.dispatch("PATCH")

    def do_HEAD(self):
        self.dispatch("HEAD")

    def send_error(self, code, message=None, explain=None):
        # http.server's own errors (bad request line, unknown method, ...)
        # as a Nova-shaped JSON fault instead of its HTML page.
        self.close_connection = True
        data = json.dumps({FAULT_NAMES.get(code, "computeFault"): {
            "code": code, "message": message or self.responses.get(code, ("Error",))[0]}}).encode()
        self.send_response(code, message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and code >= 200 and code not in (204, 304):
            self.wfile.write(data)

    def send_json(self, code, body, headers=None):
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(code)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("OpenStack-API-Version", "compute " + MICROVERSION)
        self.send_header("X-OpenStack-Nova-API-Version", MICROVERSION)
        self.send_header("Vary", "OpenStack-API-Version, X-OpenStack-Nova-API-Version")
        rid = "req-" + str(uuid.uuid4())
        self.send_header("X-OpenStack-Request-ID", rid)
        self.send_header("X-Compute-Request-ID", rid)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks, total = [], 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > MAX_BODY:
                    self.close_connection = True
                    raise ApiError(413, "Request is too large.")
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            length = int(length)
        except ValueError:
            self.close_connection = True
            raise bad("Invalid Content-Length") from None
        if length > MAX_BODY:
            self.close_connection = True
            raise ApiError(413, "Request is too large.")
        return self.rfile.read(length)

    def json_body(self, raw):
        ctype = self.headers.get("Content-Type", "application/json").split(";")[0].strip().lower()
        if ctype not in ("application/json", ""):
            raise ApiError(415, "Unsupported Content-Type")
        if not raw.strip():
            raise bad("The server could not comply with the request since it is "
                      "either malformed or otherwise incorrect.")
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise bad("Malformed request body") from None

    def check_microversion(self):
        asked = None
        v = self.headers.get("OpenStack-API-Version")
        if v:
            parts = v.strip().split()
            if len(parts) == 2 and parts[0].lower() == "compute":
                asked = parts[1]
        if asked is None:
            asked = self.headers.get("X-OpenStack-Nova-API-Version")
        if asked is None or asked.strip().lower() in ("latest", "2.1"):
            return
        m = re.match(r"^\s*(\d+)\.(\d+)\s*$", asked)
        if not m:
            raise bad("API Version String %s is of invalid format. Must be of "
                      "format MajorNum.MinorNum." % asked)
        raise ApiError(406, "Version %s is not supported by the API. Minimum is "
                            "2.1 and maximum is %s (this is a Nova stand-in)."
                       % (asked, MICROVERSION))

    def dispatch(self, method):
        try:
            raw = self.read_body() if method in ("POST", "PUT", "PATCH") else b""
            self.route(method, raw)
        except ApiError as e:
            body = e.body if e.body is not None else {
                FAULT_NAMES.get(e.code, "computeFault"): {"code": e.code, "message": e.message}}
            self.send_json(e.code, body, e.headers)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:
            traceback.print_exc()
            self.close_connection = True
            try:
                self.send_json(500, {"computeFault": {
                    "code": 500, "message": "Unexpected API Error. "
                                            "See the stand-in's log."}})
            except OSError:
                pass

    def route(self, method, raw):
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        parts = [p for p in url.path.split("/") if p]
        host = self.headers.get("Host") or "127.0.0.1:%d" % self.server.server_address[1]
        base = "http://" + host
        nova = self.nova

        if not parts:
            if method not in ("GET", "HEAD"):
                raise ApiError(405, "The method specified is not allowed for this resource.")
            return self.send_json(200, {"versions": [version_doc(base)]})
        if parts[0] != "v2.1":
            raise ApiError(404, "The resource could not be found.")
        if len(parts) == 1:
            if method not in ("GET", "HEAD"):
                raise ApiError(405, "The method specified is not allowed for this resource.")
            return self.send_json(200, {"version": version_doc(base)})

        ctx = nova.authenticate(self.headers.get("X-Auth-Token"))
        self.check_microversion()
        rest = parts[1:]
        if rest and rest[0] == ctx["project"]:
            rest = rest[1:]
        if not rest:
            raise ApiError(404, "The resource could not be found.")

        def allow(*methods):
            if method not in methods:
                raise ApiError(405, "The method specified is not allowed for this resource.")

        if rest[0] == "servers":
            if len(rest) == 1:
                allow("GET", "HEAD", "POST")
                if method == "POST":
                    sid, body = nova.create(ctx, base, self.json_body(raw))
                    return self.send_json(202, body,
                                          {"Location": "%s/v2.1/servers/%s" % (base, sid)})
                return self.list_servers(ctx, base, query, detail=False)
            if len(rest) == 2 and rest[1] == "detail":
                allow("GET", "HEAD")
                return self.list_servers(ctx, base, query, detail=True)
            s = nova.get(ctx, rest[1])
            if len(rest) == 2:
                allow("GET", "HEAD", "DELETE")
                if method == "DELETE":
                    nova.stop(s, deleting=True)
                    return self.send_json(204, None)
                return self.send_json(200, {"server": nova.detail(base, s)})
            if len(rest) == 3 and rest[2] == "action":
                allow("POST")
                return self.action(s, self.json_body(raw))
            raise ApiError(404, "The resource could not be found.")
        if rest[0] == "flavors":
            allow("GET", "HEAD")
            if len(rest) == 1 or (len(rest) == 2 and rest[1] == "detail"):
                detail = len(rest) == 2
                return self.send_json(200, {"flavors": [
                    nova.flavor_doc(base, f, detail) for f in FLAVORS]})
            if len(rest) == 2:
                for f in FLAVORS:
                    if f[0] == rest[1]:
                        return self.send_json(200, {"flavor": nova.flavor_doc(base, f, True)})
                raise ApiError(404, "Flavor %s could not be found." % rest[1])
        raise ApiError(404, "The resource could not be found.")

    def list_servers(self, ctx, base, query, detail):
        nova = self.nova
        with nova.lock:
            servers = [s for s in nova.servers.values() if s.project == ctx["project"]]
        servers.sort(key=lambda s: s.created, reverse=True)
        if "name" in query:
            try:
                rx = re.compile(query["name"][-1])
            except re.error:
                raise bad("Invalid regular expression in name filter: %s"
                          % query["name"][-1]) from None
            servers = [s for s in servers if rx.search(s.name)]
        if "status" in query:
            wanted = {v.upper() for v in query["status"]}
            servers = [s for s in servers if s.status in wanted]
        if "marker" in query:
            ids = [s.id for s in servers]
            marker = query["marker"][-1]
            if marker not in ids:
                raise bad("marker [%s] not found" % marker)
            servers = servers[ids.index(marker) + 1:]
        body = {}
        if "limit" in query:
            try:
                limit = int(query["limit"][-1])
                if limit < 0:
                    raise ValueError
            except ValueError:
                raise bad("Invalid input for query parameters limit. Value: %s."
                          % query["limit"][-1]) from None
            if len(servers) > limit:
                servers = servers[:limit]
                if servers:
                    q = {k: v[-1] for k, v in query.items() if k != "marker"}
                    q["marker"] = servers[-1].id
                    body["servers_links"] = [{"rel": "next", "href": "%s/v2.1/servers%s?%s" % (
                        base, "/detail" if detail else "", urllib.parse.urlencode(q))}]
        body["servers"] = [nova.detail(base, s) if detail else nova.brief(base, s)
                           for s in servers]
        return self.send_json(200, body)

    def action(self, s, body):
        if not isinstance(body, dict) or len(body) != 1:
            raise bad("Malformed request body: exactly one action is expected")
        (name, arg), = body.items()
        if name == "os-getConsoleOutput":
            if arg is None:
                arg = {}
            if not isinstance(arg, dict) or set(arg) - {"length"}:
                raise bad("Invalid input for field/attribute os-getConsoleOutput. "
                          "Value: %s." % _short(arg))
            length = arg.get("length")
            if isinstance(length, str) and re.match(r"^-?[0-9]+$", length):
                length = int(length)
            if length is not None and (not isinstance(length, int) or isinstance(length, bool)
                                       or length < -1):
                raise bad("Invalid input for field/attribute length. Value: %s." % _short(length))
            try:
                with open(s.console, "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                data = b""
            text = data.decode("utf-8", "replace")
            if length is not None and length >= 0:
                lines = text.splitlines(True)
                text = "".join(lines[-length:]) if length else ""
            return self.send_json(200, {"output": text})
        if name == "os-stop":
            if s.vm_state not in ("active", "building"):
                raise ApiError(409, "Cannot 'stop' instance %s while it is in "
                                    "vm_state %s" % (s.id, s.vm_state))
            self.nova.stop(s, deleting=False)
            return self.send_json(202, None)
        raise bad("There is no such action: %s" % name)


class Server_(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64


def main():
    ap = argparse.ArgumentParser(description="Nova compute API v2.1 stand-in (test only)")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--keystone", required=True,
                    help="Keystone v3 URL, e.g. http://127.0.0.1:35357/v3")
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--build-seconds", type=float, default=1.0)
    ap.add_argument("--pass-env", action="append", default=[], metavar="NAME",
                    help="environment variable handed to the servers' processes")
    args = ap.parse_args()
    state_dir = os.path.abspath(args.state_dir)
    os.makedirs(os.path.join(state_dir, "servers"), exist_ok=True)
    nova = Nova(args.keystone, state_dir, args.build_seconds, args.pass_env)
    Handler.nova = nova
    httpd = Server_(("127.0.0.1", args.port), Handler)
    port = httpd.server_address[1]

    def on_signal(signum, frame):
        threading.Thread(target=httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with open(os.path.join(state_dir, "port.tmp"), "w") as f:
        f.write("%d\n" % port)
    os.replace(os.path.join(state_dir, "port.tmp"), os.path.join(state_dir, "port"))
    print("nova-standin listening on http://127.0.0.1:%d/v2.1 (keystone %s)"
          % (port, nova.keystone), flush=True)
    try:
        httpd.serve_forever()
    finally:
        nova.shutdown()
        httpd.server_close()


if __name__ == "__main__":
    main()
