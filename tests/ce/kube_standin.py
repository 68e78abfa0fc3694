#!/usr/bin/env python3
"""Kubernetes API for the Kubernetes CE tests, with a KUBELET STAND-IN.

    ###################################################################
    #  KUBELET STAND-IN: nothing here is a real kubelet, scheduler,   #
    #  job controller, garbage collector or container runtime.        #
    #  Pods are LOCAL PROCESSES on this machine; the image is ignored.#
    ###################################################################

    tests/ce/kube_standin.py --port PORT --state-dir DIR [--kubeconfig OUT]

Run it with the test-tools venv (scripts/kube-tools.sh installs kmock there);
started with another python it re-executes itself with that venv's python.

What is what:
  * kmock's KubernetesEmulator (PyPI kmock, pinned in scripts/kube-tools.sh)
    is the object store: it keeps every object and its history and streams
    watch events. It listens on an internal ephemeral 127.0.0.1 port.
  * The FRONT (this file) listens on 127.0.0.1:PORT and is what clients
    (kube-rs, curl, the Python client) talk to. It adds what kmock lacks and a
    real API server does: bearer-token check, uid / resourceVersion /
    creationTimestamp / generation, defaulting (Secret stringData -> data,
    Job selector and pod-template labels, pod-spec defaults), validation
    (names, labels, ownerReferences, quantities, Job restartPolicy, volume
    references: 422 Invalid like the real server), label and field
    selectors, List kinds (JobList...), limit/continue, 201 on create,
    Status objects for deletes and errors with the real reasons (NotFound,
    AlreadyExists, Conflict, Invalid, BadRequest, Unauthorized...), merge,
    strategic-merge and JSON patches, PUT, the status subresource, deletion
    with finalizers / propagationPolicy, deletecollection, watch filtering
    and timeoutSeconds, the pods/log subresource, /version and fixed-up
    discovery documents (/api, /apis, /api/v1, /apis/batch/v1...).
  * The KUBELET STAND-IN (class Kubelet, a thread) plays job controller,
    scheduler, kubelet, TTL controller and garbage collector by polling the
    front over HTTP with the same token:
      - for each Job it creates Pods (generateName "<job>-", labels
        job-name=<job> etc., ownerReference to the Job), counts succeeded and
        failed pods, honours backoffLimit, activeDeadlineSeconds, parallelism
        / completions, and writes Job status (startTime, active, ready,
        succeeded, failed, conditions SuccessCriteriaMet+Complete or
        FailureTarget+Failed, completionTime) like a v1.33 job controller;
      - it "schedules" a Pod if its nodeSelector matches the node labels
        (--node-label; with none given every selector matches) and its cpu /
        memory requests fit (--node-cpu, --node-memory), else the Pod stays
        Pending with PodScheduled=False/Unschedulable;
      - it materialises Secret (and ConfigMap, emptyDir) volumes into
        DIR/pods/<ns>/<pod>/volumes/<volume>/ (base64 data decoded, file mode
        from items[].mode or defaultMode), and RUNS THE CONTAINER's command +
        args AS A LOCAL PROCESS GROUP with the container's env (value,
        valueFrom secretKeyRef / configMapKeyRef / fieldRef / resourceFieldRef,
        envFrom; $(VAR) expansion). MOUNT PATHS ARE REWRITTEN, NOT MOUNTED:
        every volumeMount's mountPath (e.g. /dirac) that appears as a path
        prefix in command, args, env values or workingDir is replaced by that
        volume's directory. A script that hard-codes a mount path inside its
        own text will not find it: use "$(dirname "$0")" or an env variable.
        The working directory is workingDir (rewritten) or DIR/pods/<ns>/<pod>/
        work. The environment is clean: PATH and HOME from the stand-in,
        HOSTNAME=<pod>, KUBERNETES_SERVICE_HOST/PORT, then the container's
        (--inherit-env passes the stand-in's whole environment);
      - stdout+stderr (one pipe, interleaved as a container runtime does) is
        the pod log, served at GET /api/v1/namespaces/NS/pods/NAME/log;
      - a deleted Pod, or a Job that is deleted (ANY propagationPolicy, also
        the batch/v1 default, orphan: the real server would leave the pods
        running) kills the local process group (SIGTERM, SIGKILL after the
        grace period capped at 5 s) and the Job's Pods are deleted;
      - finished Jobs with ttlSecondsAfterFinished are deleted (Foreground,
        uid precondition) after that time; Secrets, ConfigMaps and Pods whose
        ownerReferences name only Jobs that no longer exist (checked by uid)
        are deleted, as the garbage collector does.
    Pod-level simplifications: no restarts (restartPolicy OnFailure/Always
    behave like Never; a Job's failed pod is replaced immediately, no
    back-off delay), resources are not enforced, images, imagePullSecrets,
    securityContext, probes, serviceAccountName and readOnly are ignored,
    no real namespaces (any namespace name is accepted without a Namespace
    object).

Startup: when the front listens, the kubeconfig (OUT, default
DIR/kubeconfig) is written atomically, DIR/port holds the port and
"ready <url>" is printed on stdout. SIGTERM / SIGINT kill every pod process
and exit. Everything listens on 127.0.0.1 only.
"""

import argparse
import asyncio
import base64
import copy
import datetime
import json
import math
import os
import random
import re
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
import uuid

try:
    import aiohttp
    import aiohttp.web as web
    import jsonpatch
    import kmock
except ImportError:  # not the test-tools venv: re-execute with it
    _venv = os.path.join(os.environ.get("DIRAC_TEST_TOOLS") or os.path.expanduser("~/.cache/dirac-test-tools"),
                         "venv")
    _venv_py = os.path.join(_venv, "bin", "python")
    if os.path.realpath(sys.prefix) != os.path.realpath(_venv) and os.access(_venv_py, os.X_OK):
        os.execv(_venv_py, [_venv_py] + sys.argv)
    sys.exit("kube_standin.py: kmock is not installed; run scripts/kube-tools.sh")

NODE_NAME = "dirac-standin"
VERSION = {
    "major": "1",
    "minor": "33",
    "gitVersion": "v1.33.0-dirac-standin",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-01-01T00:00:00Z",
    "goVersion": "go1.24.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}
# Resources with a status subresource: the main endpoint ignores status
# changes and .../status changes only status, as on a real server.
STATUS_SUBRESOURCE = {"jobs", "pods", "cronjobs", "deployments", "namespaces", "nodes"}


def log(*parts):
    print("kube-standin:", *parts, file=sys.stderr, flush=True)


def now_rfc3339():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def now_rfc3339_nano():
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%09dZ" % int((t % 1) * 1e9)


def parse_rfc3339(s):
    if not s:
        return None
    s = s.replace("Z", "+00:00")
    m = re.match(r"^(.*T\d\d:\d\d:\d\d)(\.\d+)?(.*)$", s)
    if m:  # fromisoformat takes at most microseconds: cut nanoseconds
        frac = (m.group(2) or "")[:7]
        s = m.group(1) + frac + m.group(3)
    return datetime.datetime.fromisoformat(s).timestamp()


def strip_nulls(v):
    if isinstance(v, dict):
        return {k: strip_nulls(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [strip_nulls(x) for x in v]
    return v


def gen_suffix(n=5):
    return "".join(random.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(n))


# ---------------------------------------------------------------- errors


class ApiError(Exception):
    def __init__(self, code, reason, message, details=None, headers=None):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.details, self.headers = details, headers or {}

    def status(self):
        st = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
              "message": self.message, "reason": self.reason, "code": self.code}
        if self.details is not None:
            st["details"] = self.details
        return st


def qualified(res):
    return res.plural + ("." + res.group if res.group else "")


def details_for(res, name, causes=None, uid=None):
    d = {"name": name, "kind": res.plural}
    if res.group:
        d["group"] = res.group
    if uid:
        d["uid"] = uid
    if causes:
        d["causes"] = causes
    return d


def not_found(res, name):
    return ApiError(404, "NotFound", f'{qualified(res)} "{name}" not found', details_for(res, name))


def already_exists(res, name):
    return ApiError(409, "AlreadyExists", f'{qualified(res)} "{name}" already exists', details_for(res, name))


def conflict(res, name, why="the object has been modified; please apply your changes to the latest version and try again"):
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {qualified(res)} "{name}": {why}',
                    details_for(res, name))


def bad_request(msg):
    return ApiError(400, "BadRequest", msg)


class Invalid(Exception):
    """Collects field errors; raised as one 422 Invalid Status."""

    def __init__(self):
        super().__init__("invalid")
        self.causes = []

    def add(self, field, message, reason="FieldValueInvalid"):
        self.causes.append({"reason": reason, "message": message, "field": field})

    def raise_if_any(self, res, kind, name):
        if self.causes:
            group = ("." + res.group) if res.group else ""
            msg = f'{kind}{group} "{name}" is invalid: ' + ", ".join(
                f'{c["field"]}: {c["message"]}' for c in self.causes)
            raise ApiError(422, "Invalid", msg, details_for(res, name, self.causes))


# ---------------------------------------------------------------- validation

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?\d+)?$")
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
BIN_SUFFIX = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
DEC_SUFFIX = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}


def quantity(v):
    """A Kubernetes quantity as a float; ValueError if malformed."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    s = v.strip() if isinstance(v, str) else ""
    m = QUANTITY.match(s)
    if not m:
        raise ValueError("quantities must match the regular expression "
                         "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")
    suf = m.group(3) or ""
    if suf in BIN_SUFFIX:
        return float(s[: len(s) - len(suf)]) * BIN_SUFFIX[suf]
    if suf in DEC_SUFFIX:
        return float(s[: len(s) - len(suf)]) * DEC_SUFFIX[suf]
    return float(s)  # an exponent: 1e3


def check_qualified_key(inv, field, key):
    prefix, _, name = key.rpartition("/")
    if "/" in key and (not prefix or len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix)):
        inv.add(field, f'Invalid value: "{key}": prefix part must be a lowercase RFC 1123 subdomain')
    if not name or len(name) > 63 or not QUALIFIED_NAME.match(name):
        inv.add(field, f'Invalid value: "{key}": name part must consist of alphanumeric characters, '
                       f"'-', '_' or '.', and must start and end with an alphanumeric character "
                       f"(at most 63 characters)")


def validate_metadata(inv, meta, res, path="metadata", need_name=True):
    name = meta.get("name")
    if need_name:
        if not name:
            inv.add(path + ".name", "Required value: name or generateName is required", "FieldValueRequired")
        elif res.plural == "namespaces" or res.plural == "jobs":
            # Job names become the job-name label value of their pods.
            limit = 63
            if len(name) > limit or not DNS1123_LABEL.match(name):
                inv.add(path + ".name", f'Invalid value: "{name}": must be a lowercase RFC 1123 label '
                                        f"(at most {limit} characters)")
        elif len(name) > 253 or not DNS1123_SUBDOMAIN.match(name):
            inv.add(path + ".name", f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist '
                                    f"of lower case alphanumeric characters, '-' or '.'")
    for key, val in (meta.get("labels") or {}).items():
        check_qualified_key(inv, path + ".labels", key)
        if not isinstance(val, str) or len(val) > 63 or not LABEL_VALUE.match(val):
            inv.add(path + ".labels", f'Invalid value: "{val}": a valid label value must be 63 characters or '
                                      f"less and must be empty or begin and end with an alphanumeric character")
    for key, val in (meta.get("annotations") or {}).items():
        check_qualified_key(inv, path + ".annotations", key)
        if not isinstance(val, str):
            inv.add(path + ".annotations", f"Invalid value: annotation {key} is not a string")
    refs = meta.get("ownerReferences")
    if refs is not None:
        if not isinstance(refs, list):
            inv.add(path + ".ownerReferences", "Invalid value: must be a list")
        else:
            controllers = 0
            for i, r in enumerate(refs):
                f = f"{path}.ownerReferences[{i}]"
                for key in ("apiVersion", "kind", "name", "uid"):
                    if not isinstance(r, dict) or not r.get(key):
                        inv.add(f + "." + key, "Required value: " + key + " must not be empty",
                                "FieldValueRequired")
                if isinstance(r, dict) and r.get("controller"):
                    controllers += 1
            if controllers > 1:
                inv.add(path + ".ownerReferences", "Invalid value: Only one reference can have Controller set to true")


def validate_resources(inv, field, resources):
    vals = {}
    for part in ("requests", "limits"):
        for k, v in ((resources or {}).get(part) or {}).items():
            try:
                vals[(part, k)] = quantity(v)
            except ValueError as e:
                # The real server rejects malformed quantities while decoding.
                raise bad_request(f"quantities must match the regular expression: {field}.{part}.{k}: {v!r}: {e}")
    for (part, k), v in vals.items():
        if part == "requests" and ("limits", k) in vals and v > vals[("limits", k)]:
            inv.add(f"{field}.requests", f'Invalid value: "{resources["requests"][k]}": must be less than or '
                                         f"equal to {k} limit of {resources['limits'][k]}")


def default_pod_spec(spec, job=False):
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    spec.setdefault("terminationGracePeriodSeconds", 30)
    if not job:  # a Job's template must say Never or OnFailure: no default
        spec.setdefault("restartPolicy", "Always")
    for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        image = c.get("image", "")
        tagged = ":" in image.rsplit("/", 1)[-1] or "@" in image
        c.setdefault("imagePullPolicy", "IfNotPresent" if tagged and not image.endswith(":latest") else "Always")
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        c.setdefault("resources", {})
    for v in spec.get("volumes") or []:
        for src in ("secret", "configMap"):
            if isinstance(v.get(src), dict):
                v[src].setdefault("defaultMode", 0o644)


def validate_pod_spec(inv, spec, field, job=False):
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        inv.add(field + ".containers", "Required value", "FieldValueRequired")
        containers = []
    rp = spec.get("restartPolicy")
    if job and rp is None:
        inv.add(field + ".restartPolicy", 'Required value: valid values: "OnFailure", "Never"',
                "FieldValueRequired")
    elif job and rp not in ("Never", "OnFailure"):
        inv.add(field + ".restartPolicy", f'Unsupported value: "{rp}": supported values: "OnFailure", "Never"',
                "FieldValueNotSupported")
    elif rp not in ("Always", "Never", "OnFailure"):
        inv.add(field + ".restartPolicy", f'Unsupported value: "{rp}"', "FieldValueNotSupported")
    volumes = {}
    for i, v in enumerate(spec.get("volumes") or []):
        name = v.get("name")
        if not name or not DNS1123_LABEL.match(name):
            inv.add(f"{field}.volumes[{i}].name", f'Invalid value: "{name}": must be a lowercase RFC 1123 label')
        elif name in volumes:
            inv.add(f"{field}.volumes[{i}].name", f'Duplicate value: "{name}"', "FieldValueDuplicate")
        volumes[name] = v
        for src in ("secret", "configMap"):
            s = v.get(src)
            if isinstance(s, dict):
                mode = s.get("defaultMode")
                if mode is not None and not (isinstance(mode, int) and 0 <= mode <= 0o777):
                    inv.add(f"{field}.volumes[{i}].{src}.defaultMode",
                            f"Invalid value: {mode}: must be a number between 0 and 0777 (octal), both inclusive")
                if src == "secret" and not s.get("secretName"):
                    inv.add(f"{field}.volumes[{i}].secret.secretName", "Required value", "FieldValueRequired")
    names = set()
    for kind in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(kind) or []):
            f = f"{field}.{kind}[{i}]"
            name = c.get("name")
            if not name or not DNS1123_LABEL.match(name):
                inv.add(f + ".name", f'Invalid value: "{name}": must be a lowercase RFC 1123 label')
            elif name in names:
                inv.add(f + ".name", f'Duplicate value: "{name}"', "FieldValueDuplicate")
            names.add(name)
            if not c.get("image"):
                inv.add(f + ".image", "Required value", "FieldValueRequired")
            for key in ("command", "args"):
                if c.get(key) is not None and not (isinstance(c[key], list) and all(isinstance(x, str) for x in c[key])):
                    inv.add(f + "." + key, "Invalid value: must be a list of strings")
            for j, e in enumerate(c.get("env") or []):
                if not ENV_NAME.match(str(e.get("name", ""))):
                    inv.add(f"{f}.env[{j}].name", f'Invalid value: "{e.get("name")}": a valid environment '
                                                  f"variable name must consist of alphabetic characters, digits, "
                                                  f"'_', '-', or '.', and must not start with a digit")
                if "value" in e and not isinstance(e["value"], str):
                    inv.add(f"{f}.env[{j}].value", "Invalid value: must be a string")
            mounts = set()
            for j, m in enumerate(c.get("volumeMounts") or []):
                if m.get("name") not in volumes:
                    inv.add(f"{f}.volumeMounts[{j}].name", f'Not found: "{m.get("name")}"', "FieldValueNotFound")
                mp = m.get("mountPath") or ""
                if not mp.startswith("/"):
                    inv.add(f"{f}.volumeMounts[{j}].mountPath", f'Invalid value: "{mp}": must be an absolute path')
                elif mp in mounts:
                    inv.add(f"{f}.volumeMounts[{j}].mountPath", f'Invalid value: "{mp}": must be unique')
                mounts.add(mp)
            validate_resources(inv, f + ".resources", c.get("resources"))
    ns = spec.get("nodeSelector")
    if ns is not None:
        for k, v in ns.items():
            check_qualified_key(inv, field + ".nodeSelector", k)
            if not isinstance(v, str) or not LABEL_VALUE.match(v):
                inv.add(field + ".nodeSelector", f'Invalid value: "{v}"')
    sa = spec.get("serviceAccountName")
    if sa is not None and not DNS1123_SUBDOMAIN.match(sa):
        inv.add(field + ".serviceAccountName", f'Invalid value: "{sa}"')


def qos_class(spec):
    reqs, lims, all_guaranteed = False, False, True
    for c in spec.get("containers") or []:
        r = (c.get("resources") or {})
        req, lim = dict(r.get("requests") or {}), r.get("limits") or {}
        for k, v in lim.items():
            req.setdefault(k, v)
        reqs = reqs or bool(req)
        lims = lims or bool(lim)
        for k in ("cpu", "memory"):
            if k not in lim or k not in req or quantity(req[k]) != quantity(lim[k]):
                all_guaranteed = False
    if all_guaranteed and lims:
        return "Guaranteed"
    return "Burstable" if reqs or lims else "BestEffort"


# ---------------------------------------------------------------- selectors

_SEL_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_SEL_VAL = r"[-A-Za-z0-9_.]*"


def split_top(s):
    parts, depth, cur = [], 0, ""
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p for p in (x.strip() for x in parts) if p]


def parse_label_selector(s):
    """Requirements as (key, op, values); raises ApiError 400 like the real server."""
    reqs = []
    for part in split_top(s or ""):
        m = re.match(rf"^!\s*({_SEL_KEY})$", part)
        if m:
            reqs.append((m.group(1), "!", []))
            continue
        m = re.match(rf"^({_SEL_KEY})\s+(in|notin)\s*\((.*)\)$", part)
        if m:
            vals = [v.strip() for v in m.group(3).split(",")]
            if any(not re.fullmatch(_SEL_VAL, v) for v in vals):
                raise bad_request(f"unable to parse requirement: invalid value in set: {part}")
            reqs.append((m.group(1), m.group(2), vals))
            continue
        m = re.match(rf"^({_SEL_KEY})\s*(==|=|!=|>|<)\s*({_SEL_VAL})$", part)
        if m:
            op = "=" if m.group(2) == "==" else m.group(2)
            if op in (">", "<") and not re.fullmatch(r"-?\d+", m.group(3)):
                raise bad_request(f"unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer: {part}")
            reqs.append((m.group(1), op, [m.group(3)]))
            continue
        m = re.match(rf"^({_SEL_KEY})$", part)
        if m:
            reqs.append((m.group(1), "exists", []))
            continue
        raise bad_request(f"unable to parse requirement: <nil>: found '{part}', expected: identifier")
    return reqs


def labels_match(reqs, labels):
    labels = labels or {}
    for key, op, vals in reqs:
        has, v = key in labels, labels.get(key)
        ok = {
            "exists": has, "!": not has,
            "=": has and v == vals[0], "!=": not has or v != vals[0],
            "in": has and v in vals, "notin": not has or v not in vals,
            ">": has and re.fullmatch(r"-?\d+", v or "") is not None and int(v) > int(vals[0]),
            "<": has and re.fullmatch(r"-?\d+", v or "") is not None and int(v) < int(vals[0]),
        }[op]
        if not ok:
            return False
    return True


FIELD_SELECTABLE = {
    "pods": {"spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
             "spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName"},
    "jobs": {"status.successful"},
    "secrets": {"type"},
    "events": {"involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
               "involvedObject.uid", "reason", "type", "source"},
}


def parse_field_selector(s, res):
    reqs = []
    allowed = {"metadata.name", "metadata.namespace"} | FIELD_SELECTABLE.get(res.plural, set())
    for part in split_top(s or ""):
        m = re.match(r"^([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*)$", part)
        if not m:
            raise bad_request(f"invalid selector: '{s}'; can't understand '{part}'")
        if m.group(1) not in allowed:
            raise bad_request(f'"{m.group(1)}" is not a known field selector: only "metadata.name", "metadata.namespace"')
        reqs.append((m.group(1), "!=" if m.group(2) == "!=" else "=", m.group(3)))
    return reqs


def field_value(obj, path):
    if path == "status.successful":
        return str((obj.get("status") or {}).get("succeeded", 0))
    cur = obj
    for p in path.split("."):
        cur = cur.get(p) if isinstance(cur, dict) else None
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def fields_match(reqs, obj):
    for path, op, val in reqs:
        v = field_value(obj, path)
        if (v == val) != (op == "="):
            return False
    return True


# ---------------------------------------------------------------- patching


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


# Strategic merge: the list fields of the built-in types that merge by key
# (a subset of the real patchMergeKey tags), or as sets of primitives.
SMP_MERGE_KEYS = {
    "ownerReferences": "uid", "containers": "name", "initContainers": "name",
    "ephemeralContainers": "name", "env": "name", "volumes": "name", "volumeMounts": "mountPath",
    "volumeDevices": "devicePath", "ports": "containerPort", "conditions": "type",
    "imagePullSecrets": "name", "hostAliases": "ip", "containerStatuses": "name",
    "initContainerStatuses": "name", "podIPs": "ip", "hostIPs": "ip",
}
SMP_SET_LISTS = {"finalizers"}


def strategic_merge(target, patch, field=None):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if not k.startswith("$")}
    if patch.get("$patch") == "delete":
        return None
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if k.startswith("$"):
            if k.startswith("$deleteFromPrimitiveList/"):
                key = k.split("/", 1)[1]
                out[key] = [x for x in out.get(key) or [] if x not in v]
            continue
        if v is None:
            out.pop(k, None)
        elif isinstance(v, list) and k in SMP_MERGE_KEYS and isinstance(out.get(k), list):
            mk = SMP_MERGE_KEYS[k]
            if any(isinstance(x, dict) and x.get("$patch") == "replace" for x in v):
                out[k] = [copy.deepcopy({a: b for a, b in x.items() if a != "$patch"})
                          for x in v if isinstance(x, dict) and x.get("$patch") != "replace"]
                continue
            cur = list(out[k])
            for item in v:
                if not isinstance(item, dict) or mk not in item:
                    cur.append(copy.deepcopy(item))
                    continue
                idx = next((i for i, x in enumerate(cur) if isinstance(x, dict) and x.get(mk) == item[mk]), None)
                if item.get("$patch") == "delete":
                    if idx is not None:
                        cur.pop(idx)
                elif idx is None:
                    cur.append({a: b for a, b in copy.deepcopy(item).items() if not a.startswith("$")})
                else:
                    cur[idx] = strategic_merge(cur[idx], item, k)
            out[k] = cur
        elif isinstance(v, list) and k in SMP_SET_LISTS and isinstance(out.get(k), list):
            out[k] = out[k] + [x for x in v if x not in out[k]]
        elif isinstance(v, dict):
            merged = strategic_merge(out.get(k), v, k)
            if merged is None:
                out.pop(k, None)
            else:
                out[k] = merged
        else:
            out[k] = copy.deepcopy(v)
    return out


def merge_diff(old, new):
    """A merge patch turning old into new (dicts recursed, everything else replaced)."""
    patch = {}
    for k in old:
        if k not in new:
            patch[k] = None
    for k, v in new.items():
        if k not in old:
            patch[k] = v
        elif isinstance(v, dict) and isinstance(old[k], dict):
            sub = merge_diff(old[k], v)
            if sub:
                patch[k] = sub
        elif v != old[k]:
            patch[k] = v
    return patch


def type_changes(old, new, path=()):
    """Paths where a dict in old becomes a non-dict in new (kmock's merge refuses these)."""
    out = []
    for k, v in new.items():
        if k in old:
            if isinstance(old[k], dict) and not isinstance(v, dict):
                out.append(path + (k,))
            elif isinstance(old[k], dict) and isinstance(v, dict):
                out += type_changes(old[k], v, path + (k,))
    return out


# ---------------------------------------------------------------- store (kmock)


class Store:
    """Reads and writes kmock's emulator over its internal HTTP port."""

    def __init__(self, base):
        self.base = base.rstrip("/")
        self.session = None

    async def start(self):
        self.session = aiohttp.ClientSession()

    def url(self, res, ns=None, name=None):
        p = "/api/v1" if not res.group else f"/apis/{res.group}/{res.version}"
        if ns is not None:
            p += f"/namespaces/{ns}"
        p += f"/{res.plural}"
        if name is not None:
            p += f"/{name}"
        return self.base + p

    async def get(self, res, ns, name):
        async with self.session.get(self.url(res, ns, name)) as r:
            if r.status == 404:
                return None
            r.raise_for_status()
            return await r.json(content_type=None)

    async def list(self, res, ns=None):
        async with self.session.get(self.url(res, ns)) as r:
            if r.status == 404:
                return []
            r.raise_for_status()
            return (await r.json(content_type=None)).get("items") or []

    async def create(self, res, ns, obj):
        async with self.session.post(self.url(res, ns), json=obj) as r:
            if r.status == 409:
                raise already_exists(res, obj["metadata"]["name"])
            r.raise_for_status()
            return await r.json(content_type=None)

    async def write(self, res, ns, name, old, new):
        for path in type_changes(old, new):
            nulls = None
            for k in reversed(path):
                nulls = {k: nulls}
            await self._patch(res, ns, name, nulls)
        patch = merge_diff(old, new)
        if patch:
            await self._patch(res, ns, name, patch)

    async def _patch(self, res, ns, name, patch):
        async with self.session.patch(self.url(res, ns, name), data=json.dumps(patch),
                                      headers={"Content-Type": "application/merge-patch+json"}) as r:
            if r.status == 404:
                raise not_found(res, name)
            r.raise_for_status()

    async def delete(self, res, ns, name):
        async with self.session.delete(self.url(res, ns, name)) as r:
            if r.status == 404:
                return False
            r.raise_for_status()
            return True

    def watch(self, res, ns):
        return self.session.get(self.url(res, ns), params={"watch": "true"},
                                timeout=aiohttp.ClientTimeout(total=None, sock_read=None))


# ---------------------------------------------------------------- the API front


class Front:
    def __init__(self, emulator, store, args):
        self.k = emulator
        self.store = store
        self.args = args
        self.token = args.token
        self.lock = asyncio.Lock()
        self.rv = 1
        self.state_dir = args.state_dir
        self.server_address = None
        # (group, version, plural) -> ResourceInfo from kmock's bundled discovery.
        self.resources = {}
        for res in emulator.resources:
            if res.plural and "/" not in res.plural:
                self.resources[(res.group or "", res.version, res.plural)] = (res, emulator.resources[res])

    def next_rv(self):
        self.rv += 1
        return str(self.rv)

    # ---- helpers

    def lookup(self, group, version, plural):
        hit = self.resources.get((group, version, plural))
        if hit is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        return hit

    def api_version(self, res):
        return f"{res.group}/{res.version}" if res.group else res.version

    @staticmethod
    def json_response(obj, status=200, headers=None):
        return web.Response(text=json.dumps(obj), status=status, content_type="application/json",
                            headers=headers)

    async def body_json(self, request):
        raw = await request.read()
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError as e:
            raise bad_request(f"the body of the request was in an unknown format - accepted media types "
                              f"include: application/json: {e}")

    # ---- entry point

    async def handle(self, request):
        try:
            return await self.dispatch(request)
        except ApiError as e:
            return self.json_response(e.status(), e.code, e.headers)
        except Exception as e:  # a bug here: say so as a 500 Status
            traceback.print_exc()
            return self.json_response(ApiError(500, "InternalError", f"stand-in error: {e!r}").status(), 500)

    async def dispatch(self, request):
        path = request.path.rstrip("/") or "/"
        method = request.method
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        if path == "/version":
            return self.json_response(VERSION)
        if self.token is not None:
            if request.headers.get("Authorization", "") != f"Bearer {self.token}":
                raise ApiError(401, "Unauthorized", "Unauthorized")
        parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/")] if path != "/" else []
        if method == "GET" and (not parts or (parts[0] == "api" and len(parts) <= 2)
                                or (parts[0] == "apis" and len(parts) <= 3)):
            return await self.discovery(path, parts)
        if not parts or parts[0] not in ("api", "apis"):
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        if parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        else:
            group, version, rest = parts[1], parts[2], parts[3:]
        ns = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            ns, rest = rest[1], rest[2:]
        if not rest:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        res, info = self.lookup(group, version, rest[0])
        name = rest[1] if len(rest) > 1 else None
        sub = "/".join(rest[2:]) or None
        if info.namespaced and name is not None and ns is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        if not info.namespaced and ns is not None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        q = request.rel_url.query
        if sub is not None and sub not in ("status", "log"):
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        if sub == "log":
            if res.plural != "pods" or method != "GET":
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
            return await self.pod_log(request, res, ns, name, q)
        if name is None:
            if method == "GET" and q.get("watch") in ("true", "1"):
                return await self.watch(request, res, info, ns, q)
            if method == "GET":
                return await self.list(res, info, ns, q)
            if method == "POST":
                if info.namespaced and ns is None:
                    raise ApiError(405, "MethodNotAllowed",
                                   "the server does not allow this method on the requested resource")
                return await self.create(request, res, info, ns, q)
            if method == "DELETE":
                return await self.delete_collection(request, res, info, ns, q)
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        if method == "GET":
            if q.get("watch") in ("true", "1"):
                return await self.watch(request, res, info, ns, q, name=name)
            obj = await self.store.get(res, ns, name)
            if obj is None:
                raise not_found(res, name)
            return self.json_response(obj)
        if method in ("PATCH", "PUT"):
            return await self.update(request, res, info, ns, name, sub, q)
        if method == "DELETE" and sub is None:
            return await self.delete(request, res, info, ns, name, q)
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    # ---- discovery: kmock's documents, fixed up

    async def discovery(self, path, parts):
        async with self.store.session.get(self.store.base + path) as r:
            doc = await r.json(content_type=None)
            status = r.status
        if status == 404:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        if path == "/api":
            doc = {"kind": "APIVersions", "versions": ["v1"],
                   "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": self.server_address}]}
        if isinstance(doc, dict) and doc.get("kind") == "APIResourceList":
            if doc.get("groupVersion", "").startswith("/"):
                doc["groupVersion"] = doc["groupVersion"][1:]
            for r in doc.get("resources") or []:
                r["namespaced"] = bool(r.get("namespaced"))
                if r.get("name") == "pods/log":
                    r["verbs"] = ["get"]
        if isinstance(doc, dict) and doc.get("kind") == "APIGroupList":
            for g in doc.get("groups") or []:
                g.setdefault("serverAddressByClientCIDRs", [])
        return self.json_response(doc)

    # ---- list / watch

    def selectors(self, res, q):
        return parse_label_selector(q.get("labelSelector", "")), parse_field_selector(q.get("fieldSelector", ""), res)

    async def select(self, res, ns, q):
        lsel, fsel = self.selectors(res, q)
        items = await self.store.list(res, ns)
        items = [o for o in items if labels_match(lsel, (o.get("metadata") or {}).get("labels"))
                 and fields_match(fsel, o)]
        items.sort(key=lambda o: ((o["metadata"].get("namespace") or ""), o["metadata"]["name"]))
        return items

    async def list(self, res, info, ns, q):
        items = await self.select(res, ns, q)
        meta = {"resourceVersion": str(self.rv)}
        cont = q.get("continue")
        if cont:
            try:
                after = tuple(json.loads(base64.urlsafe_b64decode(cont.encode())))
            except Exception:
                raise bad_request("continue key is not valid")
            items = [o for o in items if ((o["metadata"].get("namespace") or ""), o["metadata"]["name"]) > after]
        limit = int(q.get("limit") or 0)
        if limit > 0 and len(items) > limit:
            last = items[limit - 1]["metadata"]
            meta["continue"] = base64.urlsafe_b64encode(
                json.dumps([last.get("namespace") or "", last["name"]]).encode()).decode()
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        for o in items:  # a real server's list items carry no kind/apiVersion
            o.pop("kind", None)
            o.pop("apiVersion", None)
        return self.json_response({"kind": f"{info.kind}List", "apiVersion": self.api_version(res),
                                   "metadata": meta, "items": items})

    async def watch(self, request, res, info, ns, q, name=None):
        lsel, fsel = self.selectors(res, q)
        if name is not None:
            fsel.append(("metadata.name", "=", name))
        since = q.get("resourceVersion") or "0"
        since = int(since) if since.isdigit() else 0
        timeout = float(q.get("timeoutSeconds") or 1800)
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        deadline = time.monotonic() + timeout
        try:
            async with self.store.watch(res, ns) as upstream:
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    try:
                        line = await asyncio.wait_for(upstream.content.readline(), left)
                    except asyncio.TimeoutError:
                        break
                    if not line:
                        break
                    line = line.strip()
                    if not line:
                        continue
                    ev = json.loads(line)
                    obj = ev.get("object") or {}
                    meta = obj.get("metadata") or {}
                    if ev.get("type") == "ERROR":
                        continue
                    rv = meta.get("resourceVersion", "0")
                    if since and rv.isdigit() and int(rv) <= since:
                        continue
                    if not labels_match(lsel, meta.get("labels")) or not fields_match(fsel, obj):
                        continue
                    await resp.write(json.dumps(ev).encode() + b"\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return resp

    # ---- create

    @staticmethod
    def check_shapes(obj, kind):
        """What the real server refuses while decoding JSON into its Go types (400)."""
        def need(v, t, field):
            if v is not None and not isinstance(v, t):
                raise bad_request(f"json: cannot unmarshal {type(v).__name__} into Go struct field "
                                  f"{kind}.{field} of type {'object' if t is dict else 'array'}")
        for key in ("metadata", "spec", "status", "data", "binaryData", "stringData"):
            need(obj.get(key), dict, key)
        meta = obj.get("metadata") or {}
        for key in ("labels", "annotations"):
            need(meta.get(key), dict, "metadata." + key)
        for key in ("ownerReferences", "finalizers"):
            need(meta.get(key), list, "metadata." + key)

    def prepare(self, res, info, obj, old=None):
        """Defaulting and validation per kind, on create (old None) and update."""
        self.check_shapes(obj, info.kind)
        meta = obj["metadata"]
        inv = Invalid()
        validate_metadata(inv, meta, res)
        if res.plural == "secrets":
            obj.setdefault("type", "Opaque")
            data = obj.get("data") or {}
            for k, v in (obj.pop("stringData", None) or {}).items():
                data[k] = base64.b64encode(str(v).encode()).decode()
            if data or "data" in obj:
                obj["data"] = data
            for k, v in data.items():
                if not SECRET_KEY.match(k):
                    inv.add(f"data[{k}]", f'Invalid value: "{k}": a valid config key must consist of '
                                          f"alphanumeric characters, '-', '_' or '.'")
                try:
                    base64.b64decode(v, validate=True)
                except Exception:
                    raise bad_request(f"illegal base64 data in Secret {meta.get('name')} key {k}")
            if old is not None and old.get("immutable") and (old.get("data") != obj.get("data")):
                inv.add("data", "Forbidden: field is immutable when `immutable` is set", "FieldValueForbidden")
        elif res.plural == "configmaps":
            for k in list((obj.get("data") or {}).keys()) + list((obj.get("binaryData") or {}).keys()):
                if not SECRET_KEY.match(k):
                    inv.add(f"data[{k}]", f'Invalid value: "{k}"')
        elif res.plural == "jobs":
            spec = obj.setdefault("spec", {})
            tmpl = spec.setdefault("template", {})
            tspec = tmpl.setdefault("spec", {})
            if old is None:
                uid = meta["uid"]
                spec.setdefault("parallelism", 1)
                spec.setdefault("completions", 1)
                spec.setdefault("backoffLimit", 6)
                spec.setdefault("completionMode", "NonIndexed")
                spec.setdefault("suspend", False)
                spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
                if spec.get("manualSelector"):
                    if not spec.get("selector"):
                        inv.add("spec.selector", "Required value", "FieldValueRequired")
                else:
                    if spec.get("selector"):
                        inv.add("spec.selector", "Invalid value: `selector` will be auto-generated")
                    gen = {"batch.kubernetes.io/controller-uid": uid}
                    spec["selector"] = {"matchLabels": gen}
                    tl = tmpl.setdefault("metadata", {}).setdefault("labels", {})
                    tl.update({"batch.kubernetes.io/controller-uid": uid,
                               "batch.kubernetes.io/job-name": meta["name"],
                               "controller-uid": uid, "job-name": meta["name"]})
                default_pod_spec(tspec, job=True)
                obj["status"] = {}
            else:
                for key in ("selector", "template", "completionMode", "podFailurePolicy"):
                    if (old.get("spec") or {}).get(key) != spec.get(key):
                        inv.add("spec." + key, "Invalid value: field is immutable", "FieldValueInvalid")
            for key in ("parallelism", "completions", "backoffLimit", "activeDeadlineSeconds",
                        "ttlSecondsAfterFinished"):
                v = spec.get(key)
                if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < (1 if key == "activeDeadlineSeconds" else 0)):
                    inv.add("spec." + key, f"Invalid value: {v!r}: must be greater than or equal to "
                                           f"{1 if key == 'activeDeadlineSeconds' else 0}")
            validate_metadata(inv, tmpl.get("metadata") or {}, res, "spec.template.metadata", need_name=False)
            validate_pod_spec(inv, tspec, "spec.template.spec", job=True)
        elif res.plural == "pods":
            spec = obj.setdefault("spec", {})
            if old is None:
                default_pod_spec(spec)
                obj["status"] = {"phase": "Pending", "qosClass": qos_class(spec)}
            validate_pod_spec(inv, spec, "spec")
        inv.raise_if_any(res, info.kind, meta.get("name") or meta.get("generateName") or "")

    async def create(self, request, res, info, ns, q):
        obj = await self.body_json(request)
        if not isinstance(obj, dict):
            raise bad_request("the body of the request must be a JSON object")
        obj = strip_nulls(obj)
        api_version = self.api_version(res)
        if obj.get("kind") not in (None, info.kind) or obj.get("apiVersion") not in (None, api_version):
            raise bad_request(f"the API version in the data ({obj.get('apiVersion')}) does not match the "
                              f"expected API version ({api_version})" if obj.get("apiVersion") != api_version
                              else f"the kind in the data ({obj.get('kind')}) does not match {info.kind}")
        obj["kind"], obj["apiVersion"] = info.kind, api_version
        meta = obj.setdefault("metadata", {})
        if info.namespaced:
            if meta.get("namespace") not in (None, "", ns):
                raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        for key in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp", "generation",
                    "selfLink", "managedFields"):
            meta.pop(key, None)
        dry = "All" in q.getall("dryRun", [])
        async with self.lock:
            if not meta.get("name") and meta.get("generateName"):
                for _ in range(10):
                    meta["name"] = meta["generateName"] + gen_suffix()
                    if await self.store.get(res, ns, meta["name"]) is None:
                        break
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_rfc3339()
            if res.plural in ("jobs", "deployments", "cronjobs"):
                meta["generation"] = 1
            self.prepare(res, info, obj)
            if await self.store.get(res, ns, meta["name"]) is not None:
                raise already_exists(res, meta["name"])
            if not dry:
                meta["resourceVersion"] = self.next_rv()
                await self.store.create(res, ns, obj)
            else:
                meta["resourceVersion"] = ""
        return self.json_response(obj, 201)

    # ---- update (PATCH, PUT; main resource or status)

    async def update(self, request, res, info, ns, name, sub, q):
        ctype = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if request.method == "PATCH" and ctype in ("application/apply-patch+yaml", "application/apply-patch+cbor"):
            raise ApiError(415, "UnsupportedMediaType",
                           "server-side apply is not supported by the dirac-rs stand-in "
                           "(use a merge or strategic merge patch)")
        if request.method == "PATCH" and ctype not in ("application/merge-patch+json", "application/json-patch+json",
                                                       "application/strategic-merge-patch+json"):
            raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format "
                                                        f"({ctype or 'no Content-Type'}) - accepted media types "
                                                        "include: application/json-patch+json, "
                                                        "application/merge-patch+json, "
                                                        "application/strategic-merge-patch+json")
        body = await self.body_json(request)
        dry = "All" in q.getall("dryRun", [])
        async with self.lock:
            cur = await self.store.get(res, ns, name)
            if cur is None:
                raise not_found(res, name)
            if request.method == "PUT":
                if not isinstance(body, dict):
                    raise bad_request("the body of the request must be a JSON object")
                new = strip_nulls(body)
                rv = (new.get("metadata") or {}).get("resourceVersion")
                if rv and rv != cur["metadata"].get("resourceVersion"):
                    raise conflict(res, name)
                if (new.get("metadata") or {}).get("name") not in (None, name):
                    raise bad_request("the name of the object does not match the name on the URL")
            elif ctype == "application/merge-patch+json":
                if not isinstance(body, dict):
                    raise bad_request("a merge patch must be a JSON object")
                self.check_patch_rv(res, name, cur, body)
                new = merge_patch(cur, body)
            elif ctype == "application/strategic-merge-patch+json":
                if res.group not in ("", "batch", "apps", "policy", "autoscaling", "networking.k8s.io",
                                     "rbac.authorization.k8s.io", "coordination.k8s.io", "storage.k8s.io"):
                    raise ApiError(415, "UnsupportedMediaType",
                                   "strategic merge patch is not supported for custom resources")
                if not isinstance(body, dict):
                    raise bad_request("a strategic merge patch must be a JSON object")
                self.check_patch_rv(res, name, cur, body)
                new = strategic_merge(cur, body)
            else:  # application/json-patch+json
                if not isinstance(body, list):
                    raise bad_request("a JSON patch must be a JSON array")
                try:
                    new = jsonpatch.apply_patch(cur, body, in_place=False)
                except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
                    raise ApiError(422, "Invalid", f"the JSON patch cannot be applied: {e}")
            new = strip_nulls(new)
            new.setdefault("metadata", {})
            # What no update can change.
            for key in ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp",
                        "deletionGracePeriodSeconds", "generation", "resourceVersion"):
                if key in cur["metadata"]:
                    new["metadata"][key] = cur["metadata"][key]
                else:
                    new["metadata"].pop(key, None)
            new["kind"], new["apiVersion"] = cur.get("kind", info.kind), cur.get("apiVersion", self.api_version(res))
            if sub == "status":
                self.check_shapes(new, info.kind)
                new = dict(copy.deepcopy(cur), status=new.get("status", {}))
            elif res.plural in STATUS_SUBRESOURCE and "status" in cur:
                new["status"] = cur["status"]
            elif res.plural in STATUS_SUBRESOURCE:
                new.pop("status", None)
            if sub is None:
                self.prepare(res, info, new, old=cur)
            if new == cur:  # a no-op: no new resourceVersion, no event
                return self.json_response(cur)
            if "generation" in cur["metadata"] and new.get("spec") != cur.get("spec"):
                new["metadata"]["generation"] = cur["metadata"]["generation"] + 1
            if dry:
                return self.json_response(new)
            new["metadata"]["resourceVersion"] = self.next_rv()
            await self.store.write(res, ns, name, cur, new)
            if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
                # kmock drops an object whose last finalizer goes; make sure.
                await self.store.delete(res, ns, name)
        return self.json_response(new)

    def check_patch_rv(self, res, name, cur, body):
        rv = (body.get("metadata") or {}).get("resourceVersion") if isinstance(body, dict) else None
        if rv and rv != cur["metadata"].get("resourceVersion"):
            raise conflict(res, name)

    # ---- delete

    def delete_options(self, body, q):
        opts = dict(body) if isinstance(body, dict) else {}
        if q.get("propagationPolicy"):
            opts["propagationPolicy"] = q["propagationPolicy"]
        if q.get("orphanDependents") is not None:
            opts["orphanDependents"] = q["orphanDependents"] == "true"
        if q.getall("dryRun", []):
            opts["dryRun"] = q.getall("dryRun")
        return opts

    async def delete(self, request, res, info, ns, name, q):
        opts = self.delete_options(await self.body_json(request), q)
        async with self.lock:
            obj, status, headers = await self.delete_locked(res, info, ns, name, opts)
        return self.json_response(obj, status, headers)

    async def delete_locked(self, res, info, ns, name, opts):
        cur = await self.store.get(res, ns, name)
        if cur is None:
            raise not_found(res, name)
        meta = cur["metadata"]
        pre = opts.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != meta.get("uid"):
            raise conflict(res, name, f"Precondition failed: UID in precondition: {pre['uid']}, "
                                      f"UID in object meta: {meta.get('uid')}")
        if pre.get("resourceVersion") and pre["resourceVersion"] != meta.get("resourceVersion"):
            raise conflict(res, name, "Precondition failed: ResourceVersion in precondition: "
                                      f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                                      f"{meta.get('resourceVersion')}")
        policy = opts.get("propagationPolicy")
        if policy not in (None, "Orphan", "Background", "Foreground"):
            raise ApiError(422, "Invalid", f'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: '
                                           f'Unsupported value: "{policy}"')
        headers = {}
        if res.plural == "jobs" and res.group == "batch" and policy is None and opts.get("orphanDependents") is None:
            # batch/v1 Jobs default to orphaning their pods; real servers warn.
            headers["Warning"] = ('299 - "child pods are preserved by default when jobs are deleted; set '
                                  'propagationPolicy=Background to remove them or set propagationPolicy=Orphan '
                                  'to suppress this warning"')
            log(f"job {ns}/{name} deleted without propagationPolicy (the real default orphans its pods; "
                f"the stand-in kills them anyway)")
        if "All" in (opts.get("dryRun") or []):
            return cur, 200, headers
        if meta.get("deletionTimestamp"):
            return cur, 202, headers
        new = copy.deepcopy(cur)
        finalizers = list(new["metadata"].get("finalizers") or [])
        if policy == "Foreground" and "foregroundDeletion" not in finalizers:
            finalizers.append("foregroundDeletion")
        new["metadata"]["resourceVersion"] = self.next_rv()
        if finalizers:
            new["metadata"]["finalizers"] = finalizers
            new["metadata"]["deletionTimestamp"] = now_rfc3339()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            await self.store.write(res, ns, name, cur, new)
            return new, 202, headers
        await self.store.write(res, ns, name, cur, new)  # the DELETED event carries a fresh resourceVersion
        await self.store.delete(res, ns, name)
        if res.plural == "pods":
            new["metadata"]["deletionTimestamp"] = now_rfc3339()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            return new, 200, headers
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": details_for(res, name, uid=meta.get("uid"))}, 200, headers

    async def delete_collection(self, request, res, info, ns, q):
        opts = self.delete_options(await self.body_json(request), q)
        items = await self.select(res, ns, q)
        out = []
        async with self.lock:
            for o in items:
                try:
                    obj, _, _ = await self.delete_locked(res, info, o["metadata"].get("namespace"),
                                                         o["metadata"]["name"], opts)
                except ApiError as e:
                    if e.code == 404:
                        continue
                    raise
                out.append(o if obj.get("kind") == "Status" else obj)
        for o in out:
            o.pop("kind", None)
            o.pop("apiVersion", None)
        return self.json_response({"kind": f"{info.kind}List", "apiVersion": self.api_version(res),
                                   "metadata": {"resourceVersion": str(self.rv)}, "items": out})

    # ---- pods/log

    def log_paths(self, ns, pod, container):
        d = os.path.join(self.state_dir, "pods", ns, pod, "logs")
        return os.path.join(d, container + ".log"), os.path.join(d, container + ".ts.log"), \
            os.path.join(d, container + ".done")

    async def pod_log(self, request, res, ns, name, q):
        pod = await self.store.get(res, ns, name)
        if pod is None:
            raise not_found(res, name)
        spec = pod.get("spec") or {}
        names = [c["name"] for c in (spec.get("containers") or [])]
        all_names = names + [c["name"] for c in (spec.get("initContainers") or [])]
        container = q.get("container")
        if not container:
            if len(names) != 1:
                raise bad_request(f"a container name must be specified for pod {name}, "
                                  f"choose one of: [{' '.join(names)}]")
            container = names[0]
        if container not in all_names:
            raise bad_request(f"container {container} is not valid for pod {name}")
        if q.get("previous") == "true":
            raise bad_request(f'previous terminated container "{container}" in pod "{name}" not found')
        statuses = ((pod.get("status") or {}).get("containerStatuses") or []) + \
            ((pod.get("status") or {}).get("initContainerStatuses") or [])
        state = next((s.get("state") or {} for s in statuses if s.get("name") == container), {})
        plain, stamped, done = self.log_paths(ns, name, container)
        if not os.path.exists(plain) and ("waiting" in state or not state):
            reason = (state.get("waiting") or {}).get("reason", "ContainerCreating")
            raise bad_request(f'container "{container}" in pod "{name}" is waiting to start: {reason}')
        timestamps = q.get("timestamps") == "true"
        since = None
        if q.get("sinceSeconds"):
            since = time.time() - int(q["sinceSeconds"])
        elif q.get("sinceTime"):
            since = parse_rfc3339(q["sinceTime"])
        tail = int(q["tailLines"]) if q.get("tailLines") else None
        limit = int(q["limitBytes"]) if q.get("limitBytes") else None

        def render(start_line=0):
            if timestamps or since is not None:
                try:
                    with open(stamped, "rb") as f:
                        lines = f.read().splitlines(keepends=True)
                except FileNotFoundError:
                    lines = []
                out = []
                for ln in lines:
                    ts, _, rest = ln.partition(b" ")
                    if since is not None and (parse_rfc3339(ts.decode()) or 0) < since:
                        continue
                    out.append(ln if timestamps else rest)
                lines = out
            else:
                try:
                    with open(plain, "rb") as f:
                        lines = f.read().splitlines(keepends=True)
                except FileNotFoundError:
                    lines = []
            return lines

        lines = render()
        if tail is not None:
            lines = lines[-tail:] if tail > 0 else []
        if q.get("follow") != "true":
            data = b"".join(lines)
            if limit is not None:
                data = data[:limit]
            return web.Response(body=data, content_type="text/plain")
        # follow: stream what is there, then new lines until the container ends
        resp = web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        sent = 0
        first = b"".join(lines)
        total_lines = len(render())
        if limit is not None:
            first = first[:limit]
        await resp.write(first)
        sent += len(first)
        idle = 0
        try:
            while limit is None or sent < limit:
                await asyncio.sleep(0.2)
                now_lines = render()
                new = now_lines[total_lines:]
                total_lines = len(now_lines)
                if new:
                    chunk = b"".join(new)
                    if limit is not None:
                        chunk = chunk[: limit - sent]
                    await resp.write(chunk)
                    sent += len(chunk)
                    continue
                if os.path.exists(done):
                    break
                idle += 1
                if idle % 5 == 0 and await self.store.get(res, ns, name) is None:
                    break
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return resp


# ---------------------------------------------------------------- kubelet stand-in
# Everything below is a STAND-IN for the job controller, scheduler, kubelet,
# TTL controller and garbage collector: pods are local processes.


class Client:
    """A tiny synchronous client of the front, used by the kubelet stand-in."""

    def __init__(self, base, token, cafile=None):
        self.base, self.token = base, token
        handlers = [urllib.request.ProxyHandler({})]  # never via an http_proxy from the environment
        if cafile:
            handlers.append(urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=cafile)))
        self.opener = urllib.request.build_opener(*handlers)

    def req(self, method, path, body=None, ctype="application/json", query=None):
        url = self.base + path + ("?" + urllib.parse.urlencode(query) if query else "")
        data = json.dumps(body).encode() if body is not None else None
        r = urllib.request.Request(url, data=data, method=method)
        if self.token:
            r.add_header("Authorization", "Bearer " + self.token)
        if data is not None:
            r.add_header("Content-Type", ctype)
        try:
            with self.opener.open(r, timeout=30) as resp:
                raw = resp.read()
                return resp.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, {"message": raw.decode(errors="replace")}

    def list(self, path, **query):
        st, body = self.req("GET", path, query=query or None)
        if st != 200:
            raise RuntimeError(f"GET {path}: {st} {body}")
        return body.get("items") or []

    def merge(self, path, patch):
        return self.req("PATCH", path, patch, "application/merge-patch+json")


def pod_path(ns, name, sub=""):
    return f"/api/v1/namespaces/{ns}/pods/{name}" + (f"/{sub}" if sub else "")


def job_path(ns, name, sub=""):
    return f"/apis/batch/v1/namespaces/{ns}/jobs/{name}" + (f"/{sub}" if sub else "")


def owner_uids(obj, kind=None):
    return {r.get("uid") for r in (obj.get("metadata") or {}).get("ownerReferences") or []
            if kind is None or r.get("kind") == kind}


def condition(ctype, reason=None, message=None, status="True"):
    t = now_rfc3339()
    c = {"type": ctype, "status": status, "lastProbeTime": t, "lastTransitionTime": t}
    if reason:
        c["reason"] = reason
    if message:
        c["message"] = message
    return c


def pod_conditions(ready, scheduled=True, initialized=None, unschedulable_msg=None, completed=False):
    t = now_rfc3339()
    initialized = ready if initialized is None else initialized

    def c(ctype, ok, reason=None, message=None):
        d = {"type": ctype, "status": "True" if ok else "False", "lastProbeTime": None, "lastTransitionTime": t}
        if reason:
            d["reason"] = reason
        if message:
            d["message"] = message
        return d
    if not scheduled:
        return [c("PodScheduled", False, "Unschedulable", unschedulable_msg)]
    not_ready = "PodCompleted" if completed else "ContainersNotReady"
    return [c("PodReadyToStartContainers", initialized and not completed), c("Initialized", initialized),
            c("Ready", ready, None if ready else not_ready),
            c("ContainersReady", ready, None if ready else not_ready),
            c("PodScheduled", True)]


class PodRunner(threading.Thread):
    """Runs one pod's containers as local process groups."""

    def __init__(self, kubelet, pod):
        super().__init__(daemon=True, name="pod-" + pod["metadata"]["name"])
        self.kl = kubelet
        self.pod = pod
        self.ns = pod["metadata"]["namespace"]
        self.name = pod["metadata"]["name"]
        self.uid = pod["metadata"]["uid"]
        self.dir = os.path.join(kubelet.state_dir, "pods", self.ns, self.name)
        self.killed = threading.Event()
        self.procs = {}
        self.lock = threading.Lock()
        self.finished = False
        self.start_time = now_rfc3339()

    # ---- status reporting

    def report(self, phase, containers, init=None, ready=False, initialized=None, reason=None, message=None):
        st = {"phase": phase, "conditions": pod_conditions(ready, initialized=initialized,
                                                           completed=phase in ("Succeeded", "Failed")),
              "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
              "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
              "startTime": self.start_time, "containerStatuses": containers,
              "qosClass": (self.pod.get("status") or {}).get("qosClass") or qos_class(self.pod["spec"]),
              "reason": reason, "message": message}
        if init is not None:
            st["initContainerStatuses"] = init
        if self.killed.is_set():
            return
        code, body = self.kl.api.merge(pod_path(self.ns, self.name, "status"), {"status": st})
        if code not in (200, 404):
            log(f"pod {self.ns}/{self.name}: status update failed: {code} {body}")

    def cstatus(self, c, state, ready=False, restarts=0):
        return {"name": c["name"], "state": state, "lastState": {}, "ready": ready,
                "restartCount": restarts, "image": c.get("image", ""), "imageID": "",
                "containerID": f"standin://{self.uid}/{c['name']}",
                "started": "running" in state}

    def waiting(self, reason, message=None):
        w = {"reason": reason}
        if message:
            w["message"] = message
        return {"waiting": w}

    # ---- volumes, env

    def get_obj(self, path):
        code, body = self.kl.api.req("GET", path)
        return body if code == 200 else None

    def materialise(self):
        """Volume name -> directory; raises LookupError while a source is missing."""
        vols = {}
        for v in self.pod["spec"].get("volumes") or []:
            d = os.path.join(self.dir, "volumes", v["name"])
            if "secret" in v or "configMap" in v:
                src = v.get("secret") or v.get("configMap")
                is_secret = "secret" in v
                sname = src.get("secretName") if is_secret else src.get("name")
                obj = self.get_obj(f"/api/v1/namespaces/{self.ns}/{'secrets' if is_secret else 'configmaps'}/{sname}")
                if obj is None:
                    if src.get("optional"):
                        obj = {}
                    else:
                        raise LookupError(f'MountVolume.SetUp failed for volume "{v["name"]}" : '
                                          f'{"secret" if is_secret else "configmap"} "{sname}" not found')
                files = {}
                if is_secret:
                    for k, val in (obj.get("data") or {}).items():
                        files[k] = base64.b64decode(val)
                else:
                    for k, val in (obj.get("data") or {}).items():
                        files[k] = val.encode()
                    for k, val in (obj.get("binaryData") or {}).items():
                        files[k] = base64.b64decode(val)
                mode = src.get("defaultMode", 0o644)
                items = src.get("items")
                plan = [(it["key"], it.get("path", it["key"]), it.get("mode", mode)) for it in items] if items \
                    else [(k, k, mode) for k in files]
                if os.path.isdir(d):
                    shutil.rmtree(d)
                os.makedirs(d)
                for key, rel, m in plan:
                    if key not in files:
                        if src.get("optional"):
                            continue
                        raise LookupError(f'MountVolume.SetUp failed for volume "{v["name"]}" : '
                                          f'key "{key}" not found')
                    p = os.path.join(d, rel)
                    os.makedirs(os.path.dirname(p), exist_ok=True)
                    with open(p, "wb") as f:
                        f.write(files[key])
                    os.chmod(p, m)
            elif "hostPath" in v:
                d = v["hostPath"].get("path", "/")
            else:  # emptyDir and anything else: an empty directory
                os.makedirs(d, exist_ok=True)
            vols[v["name"]] = d
        return vols

    def rewriter(self, c, vols):
        mounts = []
        for m in c.get("volumeMounts") or []:
            d = vols.get(m["name"])
            if d is None:
                continue
            if m.get("subPath"):
                d = os.path.join(d, m["subPath"])
                os.makedirs(d, exist_ok=True)
            mounts.append((m["mountPath"].rstrip("/") or "/", d))
        mounts.sort(key=lambda x: -len(x[0]))

        def rewrite(s):
            for mp, d in mounts:
                if mp == "/":
                    continue
                s = re.sub(r"(?<![\w.~/-])" + re.escape(mp) + r"(?=/|$|[^\w.-])", lambda _m: d, s)
            return s
        return rewrite

    def build_env(self, c, rewrite):
        env = dict(os.environ) if self.kl.args.inherit_env else {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
        }
        env["HOSTNAME"] = self.name
        env["KUBERNETES_SERVICE_HOST"] = "127.0.0.1"
        env["KUBERNETES_SERVICE_PORT"] = str(self.kl.port)
        defined = {}

        def expand(s):
            return re.sub(r"\$\$|\$\(([A-Za-z_][-._A-Za-z0-9]*)\)",
                          lambda m: "$" if m.group(0) == "$$" else defined.get(m.group(1), m.group(0)), s)
        for ef in c.get("envFrom") or []:
            ref = ef.get("secretRef") or ef.get("configMapRef") or {}
            is_secret = "secretRef" in ef
            obj = self.get_obj(f"/api/v1/namespaces/{self.ns}/{'secrets' if is_secret else 'configmaps'}/{ref.get('name')}")
            if obj is None:
                if ref.get("optional"):
                    continue
                raise LookupError(f'{"secret" if is_secret else "configmap"} "{ref.get("name")}" not found')
            for k, v in (obj.get("data") or {}).items():
                defined[ef.get("prefix", "") + k] = base64.b64decode(v).decode(errors="replace") if is_secret else v
        for e in c.get("env") or []:
            if "valueFrom" in e:
                vf = e["valueFrom"]
                val = None
                if "secretKeyRef" in vf or "configMapKeyRef" in vf:
                    ref = vf.get("secretKeyRef") or vf.get("configMapKeyRef")
                    is_secret = "secretKeyRef" in vf
                    obj = self.get_obj(f"/api/v1/namespaces/{self.ns}/{'secrets' if is_secret else 'configmaps'}/{ref.get('name')}")
                    raw = (obj or {}).get("data", {}).get(ref.get("key"))
                    if raw is None:
                        if ref.get("optional"):
                            continue
                        raise LookupError(f'couldn\'t find key {ref.get("key")} in '
                                          f'{"Secret" if is_secret else "ConfigMap"} {self.ns}/{ref.get("name")}')
                    val = base64.b64decode(raw).decode(errors="replace") if is_secret else raw
                elif "fieldRef" in vf:
                    fp = vf["fieldRef"].get("fieldPath", "")
                    m = re.match(r"^metadata\.(labels|annotations)\['(.*)'\]$", fp)
                    if m:
                        val = (self.pod["metadata"].get(m.group(1)) or {}).get(m.group(2), "")
                    else:
                        val = {"metadata.name": self.name, "metadata.namespace": self.ns,
                               "metadata.uid": self.uid, "spec.nodeName": NODE_NAME,
                               "spec.serviceAccountName": self.pod["spec"].get("serviceAccountName", "default"),
                               "status.hostIP": "127.0.0.1", "status.podIP": "127.0.0.1"}.get(fp, "")
                elif "resourceFieldRef" in vf:
                    rf = vf["resourceFieldRef"]
                    part, _, rname = rf.get("resource", "").partition(".")
                    q = ((c.get("resources") or {}).get(part) or {}).get(rname)
                    divisor = quantity(rf.get("divisor", "1"))
                    if q is None:
                        q = self.kl.args.node_cpu if rname == "cpu" else self.kl.args.node_memory
                    val = str(int(math.ceil(quantity(q) / divisor)))
                defined[e["name"]] = val if val is not None else ""
            else:
                defined[e["name"]] = expand(e.get("value", ""))
        for k, v in defined.items():
            env[k] = rewrite(v)
        return env, expand

    # ---- running

    def start_container(self, c, vols):
        rewrite = self.rewriter(c, vols)
        env, expand = self.build_env(c, rewrite)
        argv = [rewrite(expand(x)) for x in (c.get("command") or []) + (c.get("args") or [])]
        if not c.get("command"):
            raise LookupError("the stand-in has no image ENTRYPOINT: the container needs an explicit command")
        cwd = rewrite(c["workingDir"]) if c.get("workingDir") else os.path.join(self.dir, "work")
        os.makedirs(cwd, exist_ok=True)
        plain, stamped, done = self.kl.log_paths(self.ns, self.name, c["name"])
        os.makedirs(os.path.dirname(plain), exist_ok=True)
        for p in (plain, stamped, done):
            if os.path.exists(p):
                os.remove(p)
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        log(f"pod {self.ns}/{self.name} container {c['name']}: started pid {proc.pid}: {argv}")

        def pump():
            with open(plain, "ab") as fp, open(stamped, "ab") as fs:
                for line in iter(proc.stdout.readline, b""):
                    fp.write(line)
                    fp.flush()
                    fs.write(now_rfc3339_nano().encode() + b" " + line + (b"" if line.endswith(b"\n") else b"\n"))
                    fs.flush()
            proc.wait()
            with open(done, "w") as f:
                f.write(str(proc.returncode))
        t = threading.Thread(target=pump, daemon=True)
        t.start()
        return proc, t

    def wait_all(self, procs):
        """Waits for the processes (dict name -> (proc, pump)); False if killed first."""
        while True:
            if all(p.poll() is not None for p, _ in procs.values()):
                for _, t in procs.values():
                    t.join(5)
                return True
            if self.killed.wait(0.1):
                return False

    def terminated(self, c, rc, started, killed_reason=None):
        st = {"exitCode": rc if rc >= 0 else 128 - rc, "reason": killed_reason or ("Completed" if rc == 0 else "Error"),
              "startedAt": started, "finishedAt": now_rfc3339(), "containerID": f"standin://{self.uid}/{c['name']}"}
        if rc < 0:
            st["signal"] = -rc
        return {"terminated": st}

    def run(self):
        try:
            self._run()
        except Exception as e:
            traceback.print_exc()
            log(f"pod {self.ns}/{self.name}: stand-in failure: {e!r}")
            cs = [self.cstatus(c, {"terminated": {"exitCode": 128, "reason": "StartError", "message": str(e),
                                                  "startedAt": self.start_time, "finishedAt": now_rfc3339()}})
                  for c in self.pod["spec"]["containers"]]
            self.report("Failed", cs, message=str(e))
        finally:
            self.finished = True

    def _run(self):
        spec = self.pod["spec"]
        conts = spec.get("containers") or []
        inits = spec.get("initContainers") or []
        os.makedirs(self.dir, exist_ok=True)
        waiting = [self.cstatus(c, self.waiting("ContainerCreating")) for c in conts]
        init_waiting = [self.cstatus(c, self.waiting("PodInitializing")) for c in inits] if inits else None
        self.report("Pending", waiting, init_waiting, initialized=False)
        warned = None
        while True:
            try:
                vols = self.materialise()
                break
            except LookupError as e:
                if str(e) != warned:
                    log(f"pod {self.ns}/{self.name}: {e}")
                    warned = str(e)
                if self.killed.wait(self.kl.args.poll):
                    return
        if self.kl.args.pending_seconds and self.killed.wait(self.kl.args.pending_seconds):
            return
        init_status = []
        for c in inits:
            started = now_rfc3339()
            procs = {c["name"]: self.start_container(c, vols)}
            with self.lock:
                self.procs = procs
            if not self.wait_all(procs):
                return
            rc = procs[c["name"]][0].returncode
            init_status.append(self.cstatus(c, self.terminated(c, rc, started)))
            if rc != 0:
                self.report("Failed", [self.cstatus(x, self.waiting("PodInitializing")) for x in conts],
                            init_status + [self.cstatus(x, self.waiting("PodInitializing"))
                                           for x in inits[len(init_status):]], initialized=False)
                return
        started = now_rfc3339()
        procs = {}
        for c in conts:
            try:
                procs[c["name"]] = self.start_container(c, vols)
            except (LookupError, OSError) as e:
                for p, _ in procs.values():
                    self.kl.killpg(p, 0)
                log(f"pod {self.ns}/{self.name}: container {c['name']} cannot start: {e}")
                cs = [self.cstatus(x, {"terminated": {"exitCode": 128, "reason": "StartError", "message": str(e),
                                                      "startedAt": started, "finishedAt": now_rfc3339()}})
                      for x in conts]
                self.report("Failed", cs, init_status or None, initialized=True)
                return
        with self.lock:
            self.procs = procs
        if self.killed.is_set():
            self.kill_procs()
            return
        self.report("Running", [self.cstatus(c, {"running": {"startedAt": started}}, ready=True) for c in conts],
                    init_status or None, ready=True)
        if not self.wait_all(procs):
            return
        rcs = {n: p.returncode for n, (p, _) in procs.items()}
        cs = [self.cstatus(c, self.terminated(c, rcs[c["name"]], started)) for c in conts]
        phase = "Succeeded" if all(rc == 0 for rc in rcs.values()) else "Failed"
        log(f"pod {self.ns}/{self.name}: {phase} (exit codes {rcs})")
        self.report(phase, cs, init_status or None, ready=False, initialized=True)

    def kill_procs(self):
        with self.lock:
            procs = list(self.procs.values())
        grace = min(int(self.pod["spec"].get("terminationGracePeriodSeconds", 30)), 5)
        for p, _ in procs:
            self.kl.killpg(p, grace)

    def kill(self, why):
        if not self.killed.is_set():
            log(f"pod {self.ns}/{self.name}: killing ({why})")
            self.killed.set()
            threading.Thread(target=self.kill_procs, daemon=True).start()


class JobTrack:
    def __init__(self):
        self.succeeded = set()
        self.failed = set()
        self.deadline_failed = False


class Kubelet(threading.Thread):
    def __init__(self, args, base, cafile):
        super().__init__(daemon=True, name="kubelet-standin")
        self.args = args
        self.state_dir = args.state_dir
        self.port = args.port
        self.api = Client(base, args.token, cafile)
        self.runners = {}       # pod uid -> PodRunner
        self.jobs = {}          # job uid -> JobTrack
        self.unschedulable = {}  # pod uid -> message reported
        self.node_labels = dict(kv.split("=", 1) for kv in args.node_label) if args.node_label else None
        self.stop = threading.Event()
        self.gc_tick = 0

    def log_paths(self, ns, pod, container):
        d = os.path.join(self.state_dir, "pods", ns, pod, "logs")
        return os.path.join(d, container + ".log"), os.path.join(d, container + ".ts.log"), \
            os.path.join(d, container + ".done")

    @staticmethod
    def killpg(proc, grace):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        end = time.monotonic() + grace
        while time.monotonic() < end and proc.poll() is None:
            time.sleep(0.05)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def run(self):
        while not self.stop.is_set():
            try:
                self.sync()
            except Exception as e:
                traceback.print_exc()
                log(f"kubelet stand-in: sync failed: {e!r}")
            self.stop.wait(self.args.poll)

    def shutdown(self):
        self.stop.set()
        for r in list(self.runners.values()):
            r.killed.set()
        ts = []
        for r in list(self.runners.values()):
            t = threading.Thread(target=r.kill_procs)
            t.start()
            ts.append(t)
        for t in ts:
            t.join(10)

    # ---- one pass

    def sync(self):
        self.gc_tick += 1
        owned = None
        if self.gc_tick % 2 == 1:
            # Dependents are listed BEFORE the owners so an owner created in
            # between cannot look missing.
            owned = {res: self.api.list(path) for res, path in
                     (("secrets", "/api/v1/secrets"), ("configmaps", "/api/v1/configmaps"))}
        pods = self.api.list("/api/v1/pods")
        jobs = self.api.list("/apis/batch/v1/jobs")
        job_uids = {j["metadata"]["uid"] for j in jobs}
        pods_by_job = {}
        for p in pods:
            for u in owner_uids(p, "Job"):
                pods_by_job.setdefault(u, []).append(p)

        # Pods whose Job is gone (any propagationPolicy): delete them.
        for p in pods:
            ju = owner_uids(p, "Job")
            if ju and not (ju & job_uids) and self.owner_gone(p, "Job"):
                self.delete_pod(p, "its Job was deleted")

        for j in jobs:
            try:
                self.sync_job(j, pods_by_job.get(j["metadata"]["uid"], []))
            except Exception as e:
                log(f"job {j['metadata'].get('namespace')}/{j['metadata']['name']}: sync failed: {e!r}")
        for u in list(self.jobs):
            if u not in job_uids:
                del self.jobs[u]

        self.sync_pods(pods)

        if owned is not None:
            for res, items in owned.items():
                for o in items:
                    ju = owner_uids(o, "Job")
                    others = owner_uids(o) - ju
                    if ju and not others and not (ju & job_uids) and self.owner_gone(o, "Job"):
                        m = o["metadata"]
                        log(f"garbage collector: deleting {res} {m['namespace']}/{m['name']} (owner Job gone)")
                        self.api.req("DELETE", f"/api/v1/namespaces/{m['namespace']}/{res}/{m['name']}",
                                     {"propagationPolicy": "Background"})

    def owner_gone(self, obj, kind):
        """A live check, as the real garbage collector does, before deleting a dependent."""
        ns = obj["metadata"].get("namespace")
        for r in obj["metadata"].get("ownerReferences") or []:
            if r.get("kind") != kind:
                continue
            code, body = self.api.req("GET", job_path(ns, r.get("name", "")))
            if code == 200 and body["metadata"].get("uid") == r.get("uid"):
                return False
        return True

    def delete_pod(self, p, why):
        m = p["metadata"]
        r = self.runners.get(m["uid"])
        if r is not None:
            r.kill(why)
        log(f"pod {m['namespace']}/{m['name']}: deleting ({why})")
        self.api.req("DELETE", pod_path(m["namespace"], m["name"]), {"propagationPolicy": "Background"})

    # ---- job controller stand-in

    def sync_job(self, job, pods):
        m = job["metadata"]
        ns, name, uid = m["namespace"], m["name"], m["uid"]
        spec = job.get("spec") or {}
        status = job.get("status") or {}
        track = self.jobs.setdefault(uid, JobTrack())
        conds = status.get("conditions") or []
        finished = next((c for c in conds if c.get("type") in ("Complete", "Failed") and c.get("status") == "True"),
                        None)

        if m.get("deletionTimestamp"):
            live = [p for p in pods]
            for p in live:
                self.delete_pod(p, "Job is being deleted (foreground)")
            if not live and "foregroundDeletion" in (m.get("finalizers") or []):
                fins = [f for f in m["finalizers"] if f != "foregroundDeletion"]
                self.api.req("PATCH", job_path(ns, name), {"metadata": {"finalizers": fins or None,
                                                                         "resourceVersion": m["resourceVersion"]}},
                             "application/merge-patch+json")
            return

        if finished:
            ttl = spec.get("ttlSecondsAfterFinished")
            if ttl is not None:
                at = parse_rfc3339(status.get("completionTime") or finished.get("lastTransitionTime")) or time.time()
                if time.time() >= at + ttl:
                    log(f"ttl controller: deleting job {ns}/{name} ({ttl}s after it finished)")
                    self.api.req("DELETE", job_path(ns, name),
                                 {"propagationPolicy": "Foreground", "preconditions": {"uid": uid}})
            return
        if spec.get("suspend"):
            return

        for p in pods:
            phase = (p.get("status") or {}).get("phase")
            if phase == "Succeeded":
                track.succeeded.add(p["metadata"]["uid"])
            elif phase == "Failed":
                track.failed.add(p["metadata"]["uid"])
        active = [p for p in pods if (p.get("status") or {}).get("phase") in (None, "", "Pending", "Running")
                  and not p["metadata"].get("deletionTimestamp")]
        ready = sum(1 for p in active for c in (p.get("status") or {}).get("conditions") or []
                    if c.get("type") == "Ready" and c.get("status") == "True")
        completions = spec.get("completions", 1) or 1
        parallelism = spec.get("parallelism", 1)
        backoff = spec.get("backoffLimit", 6)
        start = status.get("startTime") or now_rfc3339()
        new = {"startTime": start, "active": len(active) or None, "ready": ready, "terminating": 0,
               "uncountedTerminatedPods": {},
               "succeeded": len(track.succeeded) or None, "failed": len(track.failed) or None}
        ads = spec.get("activeDeadlineSeconds")
        if len(track.succeeded) >= completions:
            for p in active:
                self.delete_pod(p, "Job complete")
            msg = "Reached expected number of succeeded pods"
            new.update(active=None, ready=0, completionTime=now_rfc3339(),
                       conditions=conds + [condition("SuccessCriteriaMet", "CompletionsReached", msg),
                                           condition("Complete", "CompletionsReached", msg)])
            log(f"job {ns}/{name}: Complete")
        elif len(track.failed) > backoff or (ads and time.time() > (parse_rfc3339(start) or time.time()) + ads):
            if len(track.failed) > backoff:
                reason, msg = "BackoffLimitExceeded", "Job has reached the specified backoff limit"
            else:
                reason, msg = "DeadlineExceeded", "Job was active longer than specified deadline"
                for p in active:
                    track.failed.add(p["metadata"]["uid"])
            for p in active:
                self.delete_pod(p, f"Job failed: {reason}")
            new.update(active=None, ready=0, failed=len(track.failed) or None,
                       conditions=conds + [condition("FailureTarget", reason, msg), condition("Failed", reason, msg)])
            log(f"job {ns}/{name}: Failed ({reason})")
        else:
            want = min(parallelism, completions - len(track.succeeded)) - len(active)
            for _ in range(max(0, want)):
                self.create_pod(job)
                new["active"] = (new["active"] or 0) + 1
        current = {k: status.get(k) for k in new}
        if current != new:
            code, body = self.api.merge(job_path(ns, name, "status"), {"status": new})
            if code not in (200, 404):
                log(f"job {ns}/{name}: status update failed: {code} {body}")

    def create_pod(self, job):
        m = job["metadata"]
        tmpl = copy.deepcopy(job["spec"]["template"])
        tmeta = tmpl.get("metadata") or {}
        annotations = dict(tmeta.get("annotations") or {})
        annotations["batch.kubernetes.io/job-tracking"] = ""
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"generateName": m["name"] + "-", "namespace": m["namespace"],
                            "labels": tmeta.get("labels") or {}, "annotations": annotations,
                            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": m["name"],
                                                 "uid": m["uid"], "controller": True,
                                                 "blockOwnerDeletion": True}]},
               "spec": tmpl.get("spec") or {}}
        code, body = self.api.req("POST", f"/api/v1/namespaces/{m['namespace']}/pods", pod)
        if code != 201:
            log(f"job {m['namespace']}/{m['name']}: cannot create pod: {code} {body}")
        else:
            log(f"job {m['namespace']}/{m['name']}: created pod {body['metadata']['name']}")

    # ---- scheduler + kubelet stand-in

    def fits(self, pod, pods):
        sel = pod["spec"].get("nodeSelector") or {}
        if self.node_labels is not None:
            labels = dict(self.node_labels)
            labels.setdefault("kubernetes.io/hostname", NODE_NAME)
            labels.setdefault("kubernetes.io/os", "linux")
            if any(labels.get(k) != v for k, v in sel.items()):
                return "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."

        def req(p, r):
            tot = 0.0
            for c in p["spec"].get("containers") or []:
                res = c.get("resources") or {}
                v = (res.get("requests") or {}).get(r, (res.get("limits") or {}).get(r))
                tot += quantity(v) if v is not None else 0.0
            return tot
        used = {r: sum(req(p, r) for p in pods if p["spec"].get("nodeName") == NODE_NAME
                       and (p.get("status") or {}).get("phase") in ("Pending", "Running", None)
                       and p["metadata"]["uid"] != pod["metadata"]["uid"])
                for r in ("cpu", "memory")}
        cap = {"cpu": quantity(self.args.node_cpu), "memory": quantity(self.args.node_memory)}
        short = [r for r in ("cpu", "memory") if used[r] + req(pod, r) > cap[r] + 1e-9]
        if short:
            return "0/1 nodes are available: " + ", ".join(f"1 Insufficient {r}" for r in short) + "."
        return None

    def sync_pods(self, pods):
        live = set()
        for p in pods:
            m = p["metadata"]
            live.add(m["uid"])
            r = self.runners.get(m["uid"])
            if m.get("deletionTimestamp"):
                if r is not None:
                    r.kill("pod is being deleted")
                continue
            if r is not None:
                continue
            node = p["spec"].get("nodeName")
            phase = (p.get("status") or {}).get("phase")
            if node not in (None, "", NODE_NAME) or phase in ("Succeeded", "Failed"):
                continue
            if not node:
                why = self.fits(p, pods)
                if why:
                    if self.unschedulable.get(m["uid"]) != why:
                        self.unschedulable[m["uid"]] = why
                        log(f"scheduler: pod {m['namespace']}/{m['name']} unschedulable: {why}")
                        self.api.merge(pod_path(m["namespace"], m["name"], "status"),
                                       {"status": {"phase": "Pending",
                                                   "conditions": pod_conditions(False, scheduled=False,
                                                                                unschedulable_msg=why)}})
                    continue
                self.unschedulable.pop(m["uid"], None)
                code, body = self.api.merge(pod_path(m["namespace"], m["name"]), {"spec": {"nodeName": NODE_NAME}})
                if code != 200:
                    continue
                p = body
            runner = PodRunner(self, p)
            self.runners[m["uid"]] = runner
            runner.start()
        for uid, r in list(self.runners.items()):
            if uid not in live:
                r.kill("pod was deleted")
                if r.finished or not r.is_alive():
                    del self.runners[uid]
            elif r.finished and not r.is_alive():
                pass  # keep: a finished pod must not be started again
        for uid in list(self.unschedulable):
            if uid not in live:
                del self.unschedulable[uid]


# ---------------------------------------------------------------- main


def make_tls(state_dir):
    """A CA and a server certificate for 127.0.0.1 / localhost (openssl CLI)."""
    d = os.path.join(state_dir, "tls")
    os.makedirs(d, exist_ok=True)
    ca_key, ca, key, csr, crt = (os.path.join(d, n) for n in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt"))
    ext = os.path.join(d, "server.ext")
    run = lambda *a: subprocess.run(a, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", ca_key, "-out", ca, "-days", "3650", "-subj", "/CN=dirac-standin-ca",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", key, "-out", csr, "-subj", "/CN=kube-apiserver")
    with open(ext, "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
        "-out", crt, "-days", "3650", "-extfile", ext)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(crt, key)
    return ctx, ca


def write_kubeconfig(path, server, token, namespace, ca_file):
    cluster = [f"    server: {server}"]
    if ca_file:
        with open(ca_file, "rb") as f:
            cluster.append(f"    certificate-authority-data: {base64.b64encode(f.read()).decode()}")
    user = f"    token: {json.dumps(token)}" if token else "    {}"
    text = "\n".join([
        "apiVersion: v1",
        "kind: Config",
        "preferences: {}",
        "clusters:",
        "- name: dirac-standin",
        "  cluster:",
        *cluster,
        "contexts:",
        "- name: dirac-standin",
        "  context:",
        "    cluster: dirac-standin",
        "    user: dirac-standin",
        f"    namespace: {json.dumps(namespace)}",
        "current-context: dirac-standin",
        "users:",
        "- name: dirac-standin",
        "  user:" + ("" if token else " {}"),
        *([user] if token else []),
        "",
    ])
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


async def amain(args):
    emulator = kmock.KubernetesEmulator()
    emulator.resources.load_bundled()
    async with emulator, kmock.Server(emulator, host="127.0.0.1") as backend:
        store = Store(str(backend.url))
        await store.start()
        front = Front(emulator, store, args)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", front.handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        ctx, ca = (make_tls(args.state_dir) if args.tls else (None, None))
        site = web.TCPSite(runner, "127.0.0.1", args.port, ssl_context=ctx)
        await site.start()
        port = runner.addresses[0][1]
        args.port = port
        front.server_address = f"127.0.0.1:{port}"
        scheme = "https" if ctx else "http"
        url = f"{scheme}://127.0.0.1:{port}"
        with open(os.path.join(args.state_dir, "port"), "w") as f:
            f.write(str(port))
        kubelet = Kubelet(args, url, ca)
        kubelet.start()
        write_kubeconfig(args.kubeconfig, url, args.token, args.namespace, ca)
        print(f"ready {url}", flush=True)
        log(f"API on {url} (kmock store on {backend.url}), kubeconfig {args.kubeconfig}, state {args.state_dir}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for s in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(s, stop.set)
        await stop.wait()
        log("stopping: killing pod processes")
        await loop.run_in_executor(None, kubelet.shutdown)
        await runner.cleanup()
        await store.session.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True, help="port on 127.0.0.1 (0: any free port, see DIR/port)")
    ap.add_argument("--state-dir", required=True, help="pods' volumes, work directories and logs go here")
    ap.add_argument("--kubeconfig", help="where to write the kubeconfig (default DIR/kubeconfig)")
    ap.add_argument("--token", default="dirac-standin-token",
                    help="the bearer token clients must send ('' accepts anonymous requests)")
    ap.add_argument("--namespace", default="default", help="the kubeconfig context's namespace")
    ap.add_argument("--tls", action="store_true", help="serve HTTPS with a fresh CA (needs the openssl CLI)")
    ap.add_argument("--poll", type=float, default=0.2, help="kubelet stand-in poll interval, seconds")
    ap.add_argument("--pending-seconds", type=float, default=0.0,
                    help="how long a scheduled pod stays Pending before its containers start")
    ap.add_argument("--node-label", action="append", default=[], metavar="K=V",
                    help="the node's labels for nodeSelector (none given: every nodeSelector matches)")
    ap.add_argument("--node-cpu", default="64", help="the node's allocatable cpu")
    ap.add_argument("--node-memory", default="256Gi", help="the node's allocatable memory")
    ap.add_argument("--inherit-env", action="store_true",
                    help="start containers with the stand-in's whole environment (default: a clean one)")
    args = ap.parse_args()
    args.state_dir = os.path.abspath(args.state_dir)
    os.makedirs(args.state_dir, exist_ok=True)
    args.kubeconfig = os.path.abspath(args.kubeconfig or os.path.join(args.state_dir, "kubeconfig"))
    args.token = args.token or None
    for kv in args.node_label:
        if "=" not in kv:
            ap.error(f"--node-label wants K=V, not {kv!r}")
    for q in (args.node_cpu, args.node_memory):
        quantity(q)
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
