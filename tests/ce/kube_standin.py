#!/usr/bin/env python3
"""Kubernetes API for the Kubernetes CE tests, with a KUBELET STAND-IN.

    ###################################################################
    #  KUBELET STAND-IN: nothing here is a real kubelet, scheduler,   #
    #  job controller, garbage collector or container runtime.        #
    #  Pods are LOCAL PROCESSES on this machine; the image is ignored.#
    ###################################################################

    tests/ce/kube_standin.py --port PORT --state-dir DIR [--kubeconfig OUT]
                             [--crd FILE ...]

Run it with the test-tools venv (scripts/kube-tools.sh installs kmock there);
started with another python it re-executes itself with that venv's python.

What is what:
  * kmock's KubernetesEmulator (PyPI kmock, pinned in scripts/kube-tools.sh)
    is the object store: it keeps every object. It listens on an internal
    ephemeral 127.0.0.1 port. (Its request log and object histories are
    trimmed as it goes: kmock 0.8 slows down with every request it records.)
  * The FRONT (this file) listens on 127.0.0.1:PORT and is what clients
    (kube-rs, curl, the Python client) talk to. It adds what kmock lacks and a
    real API server does: bearer-token check, uid / resourceVersion /
    creationTimestamp / generation, defaulting (Secret stringData -> data,
    Job selector and pod-template labels, pod-spec defaults, Deployment and
    CronJob defaults), validation (names, labels, ownerReferences,
    quantities, Job restartPolicy, volume references, Deployment selectors,
    CronJob schedules: 422 Invalid like the real server), label and field
    selectors, List kinds (JobList...), limit/continue, 201 on create,
    Status objects for deletes and errors with the real reasons (NotFound,
    AlreadyExists, Conflict, Invalid, BadRequest, Unauthorized...), merge,
    strategic-merge and JSON patches, server-side apply (APPROXIMATED, below),
    PUT, the status subresource, deletion with finalizers /
    propagationPolicy, deletecollection, the pods/log subresource, /version
    and fixed-up discovery documents (/api, /apis, /api/v1, /apis/batch/v1...).
  * WATCHES come from the front's own event bus: every write is an event
    with its own resourceVersion (one global counter), the last 4000 are
    kept. ?watch=true&resourceVersion=N replays what happened after N (older
    than the kept events: an ERROR event 410 Expired, so a kube-rs watcher
    re-lists), "" or "0" starts with the current objects as ADDED;
    label/field selectors turn an object that starts or stops matching into
    ADDED / DELETED; allowWatchBookmarks gives a BOOKMARK every 30 s and
    before the timeoutSeconds close; sendInitialEvents=true (streaming
    lists) ends the initial objects with the k8s.io/initial-events-end
    BOOKMARK. A list is a consistent snapshot: a watch from its
    resourceVersion misses nothing. Accept: ...;as=PartialObjectMetadata(List)
    (kube-rs metadata watchers, Controller::owns) is served.
  * CUSTOM RESOURCES: --crd FILE (YAML or JSON, several documents, repeatable)
    creates CustomResourceDefinitions before the stand-in is ready; a CRD
    POSTed to /apis/apiextensions.k8s.io/v1/customresourcedefinitions is
    served too. The storage version is served (discovery with the /status
    entry, namespaced or cluster CRUD, all-namespaces lists, watches),
    generation 1 on create and +1 when anything but metadata (and status,
    with the status subresource) changes or deletion starts; with a status
    subresource, .../status writes only change status and the other writes
    ignore it. The openAPIV3Schema is applied as a real server's structural
    schema is: unknown fields pruned (unless x-kubernetes-preserve-unknown-
    fields), `default`s filled in, then type / enum / required / minimum /
    maximum / length / pattern / items checks (422 Invalid).

EMULATED APPROXIMATIONS (a real API server differs here):
  * Server-side apply (application/apply-patch+yaml, fieldManager required,
    force accepted) is a MERGE: the applied configuration is merged into the
    object (maps merged, lists replaced whole) and fields that the same
    fieldManager applied last time but no longer applies are removed. No
    managedFields, no conflicts between managers, no merging of lists by key.
    Missing objects are created (201).
  * No CEL: x-kubernetes-validations rules of CRDs are NOT evaluated (the
    start-up log says how many are ignored); no formats (date-time, int64...)
    checked; x-kubernetes-list-type not enforced; only the storage version
    of a multi-version CRD is served (no conversion); no scale subresource.
    Explicit nulls are dropped, also where the schema says nullable.
  * No admission (no webhooks, quotas, LimitRanges, ServiceAccounts), no
    RBAC, any namespace name works without a Namespace object.
  * Garbage collection and the Deployment / CronJob controllers are
    stand-ins: Deployments and CronJobs are only stored (no ReplicaSets,
    no Jobs from schedules); the garbage collector below deletes dependents.
  * A continued list (limit/continue) names the first page's
    resourceVersion but shows later pages as they are now.
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
        uid precondition) after that time; Pods whose Job no longer exists
        (checked by uid) are deleted.
    Pod-level simplifications: no restarts (restartPolicy OnFailure/Always
    behave like Never; a Job's failed pod is replaced immediately, no
    back-off delay), resources are not enforced, images, imagePullSecrets,
    securityContext, probes, serviceAccountName and readOnly are ignored,
    no real namespaces (any namespace name is accepted without a Namespace
    object).
  * The GARBAGE COLLECTOR STAND-IN (Front.gc_loop, after writes, at most
    every 2 x --poll): Secrets, ConfigMaps, Deployments, CronJobs, Jobs,
    Leases and custom resources whose ownerReferences all name objects that
    no longer exist (by uid, any kind this server serves, checked live
    before deleting) are deleted; propagationPolicy=Foreground keeps the
    owner (foregroundDeletion finalizer) until its dependents are gone;
    Orphan removes the ownerReferences at once.

Startup: once the --crd files are installed and the front listens, the
kubeconfig (OUT, default DIR/kubeconfig) is written atomically, DIR/port
holds the port and "ready <url>" is printed on stdout (a bad --crd file:
exit status 1 before any of these). SIGTERM / SIGINT kill every pod process
and exit. Everything listens on 127.0.0.1 only.
"""

import argparse
import asyncio
import base64
import collections
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
            details = details_for(res, name, self.causes)
            details["kind"] = kind  # an Invalid Status names the kind (NotFound names the resource)
            raise ApiError(422, "Invalid", msg, details)


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



def json_pointer(path):
    if path == "":
        return []
    if not path.startswith("/"):
        raise ValueError(f"JSON pointer {path!r} must start with /")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json_patch(doc, ops):
    """RFC 6902 on a copy of doc, with the leniency of the Go library the API
    server uses: "test" of a missing member against null passes (kube-rs's
    finalizer helper tests /metadata/finalizers == null on objects without
    finalizers). Raises ValueError."""
    doc = copy.deepcopy(doc)

    def parent_of(path):
        parts = json_pointer(path)
        if not parts:
            return None, None
        cur = doc
        for p in parts[:-1]:
            if isinstance(cur, dict) and p in cur:
                cur = cur[p]
            elif isinstance(cur, list) and p.isdigit() and int(p) < len(cur):
                cur = cur[int(p)]
            else:
                raise ValueError(f"doc is missing path: {path}")
        return cur, parts[-1]

    def get(path):
        if path == "":
            return True, doc
        cont, key = parent_of(path)
        if isinstance(cont, dict):
            return (key in cont), cont.get(key)
        if isinstance(cont, list) and key.isdigit() and int(key) < len(cont):
            return True, cont[int(key)]
        if isinstance(cont, list):
            return False, None
        raise ValueError(f"doc is missing path: {path}")

    def remove(path):
        cont, key = parent_of(path)
        if isinstance(cont, dict) and key in cont:
            return cont.pop(key)
        if isinstance(cont, list) and key.isdigit() and int(key) < len(cont):
            return cont.pop(int(key))
        raise ValueError(f"unable to remove nonexistent key: {key}: missing value")

    def add(path, value):
        nonlocal doc
        if path == "":
            doc = value
            return
        cont, key = parent_of(path)
        if isinstance(cont, dict):
            cont[key] = value
        elif isinstance(cont, list):
            if key == "-":
                cont.append(value)
            elif key.isdigit() and int(key) <= len(cont):
                cont.insert(int(key), value)
            else:
                raise ValueError(f"add operation does not apply: index {key} out of bounds")
        else:
            raise ValueError(f"add operation does not apply: doc is missing path: {path}")

    if not isinstance(ops, list):
        raise ValueError("a JSON patch must be a JSON array")
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise ValueError(f"invalid JSON patch operation: {op!r}")
        kind, path = op["op"], op["path"]
        if kind == "add":
            add(path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            remove(path)
        elif kind == "replace":
            found, _ = get(path)
            if not found:
                raise ValueError(f"replace operation does not apply: doc is missing key: {path}: missing value")
            if path == "":
                doc = copy.deepcopy(op.get("value"))
            else:
                remove(path)
                add(path, copy.deepcopy(op.get("value")))
        elif kind in ("move", "copy"):
            found, val = get(op.get("from", ""))
            if not found:
                raise ValueError(f"{kind} operation does not apply: doc is missing from path: {op.get('from')}")
            if kind == "move":
                remove(op["from"])
            add(path, copy.deepcopy(val))
        elif kind == "test":
            try:
                found, val = get(path)
            except ValueError:
                raise ValueError(f"testing value {path} failed: test failed")
            want = op.get("value")
            if (not found and want is not None) or (found and val != want):
                raise ValueError(f"testing value {path} failed: test failed")
        else:
            raise ValueError(f"Unexpected kind: {kind}")
    return doc


# ---------------------------------------------------------------- YAML (CRD files)


def yaml_load_all(text):
    """YAML documents of text: PyYAML when the venv has it, else the small
    block-YAML reader below (enough for CRDs as kube-derive, kubectl and
    controller-gen write them; JSON is read as JSON)."""
    try:
        import yaml
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except ImportError:
        pass
    if text.lstrip().startswith(("{", "[")):
        return [json.loads(text)]
    docs, cur = [], []
    for line in text.splitlines():
        if line.rstrip() == "---" or line.startswith("--- "):
            docs.append(cur)
            cur = []
        elif line.rstrip() == "...":
            continue
        else:
            cur.append(line)
    docs.append(cur)
    out = []
    for lines in docs:
        v = _MiniYaml(lines).parse()
        if v is not None:
            out.append(v)
    return out


class _MiniYaml:
    """Block mappings and sequences, plain / quoted / literal (|) / folded (>)
    scalars, one-line flow collections. No anchors, tags or complex keys."""

    def __init__(self, lines):
        self.raw = [ln.rstrip("\r") for ln in lines]
        self.items = []  # (indent, text, raw index)
        for i, ln in enumerate(self.raw):
            s = ln.strip()
            if not s or s.startswith("#"):
                continue
            self.items.append([len(ln) - len(ln.lstrip(" ")), s, i])
        self.i = 0

    def parse(self):
        if not self.items:
            return None
        return self.block(self.items[0][0])

    def block(self, indent):
        ind, text, _ = self.items[self.i]
        if text == "-" or text.startswith("- "):
            return self.seq(ind)
        if self.key_split(text) is None:
            self.i += 1
            return self.scalar(text)
        return self.mapping(ind)

    def seq(self, indent):
        out = []
        while self.i < len(self.items):
            ind, text, _ = self.items[self.i]
            if ind != indent or not (text == "-" or text.startswith("- ")):
                break
            rest = text[1:].strip()
            if not rest:
                self.i += 1
                if self.i < len(self.items) and self.items[self.i][0] > indent:
                    out.append(self.block(self.items[self.i][0]))
                else:
                    out.append(None)
                continue
            col = ind + (len(text) - len(text[1:].lstrip(" ")))
            self.items[self.i] = [col, rest, self.items[self.i][2]]
            if rest == "-" or rest.startswith("- ") or self.key_split(rest) is not None:
                out.append(self.block(col))
            else:
                self.i += 1
                out.append(self.value(rest, col))
        return out

    @staticmethod
    def key_split(text):
        if text[0] in "\"'":
            q = text[0]
            j = 1
            while j < len(text):
                if text[j] == q:
                    if q == "'" and j + 1 < len(text) and text[j + 1] == "'":
                        j += 2
                        continue
                    if q == '"' and text[j - 1] == "\\":
                        j += 1
                        continue
                    break
                j += 1
            rest = text[j + 1:]
            if rest.startswith(":") and (len(rest) == 1 or rest[1] == " "):
                return _MiniYaml.scalar(text[: j + 1]), rest[1:].strip()
            return None
        if text[0] in "[{":
            return None
        m = re.match(r"^([^#]*?):(\s|$)", text)
        if not m:
            return None
        return m.group(1).strip(), text[m.end():].strip()

    def mapping(self, indent):
        out = {}
        while self.i < len(self.items):
            ind, text, _ = self.items[self.i]
            if ind != indent:
                break
            kv = self.key_split(text)
            if kv is None:
                raise ValueError(f"YAML: expected 'key: value' at line {self.items[self.i][2] + 1}: {text!r}")
            key, rest = kv
            self.i += 1
            if rest and not rest.startswith("#"):
                out[key] = self.value(rest, ind)
            elif self.i < len(self.items) and (self.items[self.i][0] > indent or (
                    self.items[self.i][0] == indent and (self.items[self.i][1] == "-"
                                                         or self.items[self.i][1].startswith("- ")))):
                out[key] = self.block(self.items[self.i][0])
            else:
                out[key] = None
        return out

    def value(self, rest, indent):
        if rest[0] in "|>":
            return self.block_scalar(rest, indent)
        if rest[0] in "\"'" and not self.closed(rest):
            # a quoted scalar continued on the next lines
            parts = [rest]
            while self.i < len(self.items) and not self.closed(" ".join(parts)):
                parts.append(self.items[self.i][1])
                self.i += 1
            rest = " ".join(parts)
        if rest[0] in "[{":
            return self.flow(rest)
        return self.scalar(rest)

    @classmethod
    def closed(cls, s):
        """The quoted scalar starting `s` ends on this line."""
        try:
            cls._quote_end(s)
            return True
        except ValueError:
            return False

    def block_scalar(self, header, indent):
        chomp = "-" if "-" in header else ("+" if "+" in header else "")
        folded = header[0] == ">"
        start = self.items[self.i - 1][2] + 1 if self.i > 0 else 0
        lines, j = [], start
        block_indent = None
        while j < len(self.raw):
            ln = self.raw[j]
            if ln.strip() == "":
                lines.append("")
                j += 1
                continue
            ind = len(ln) - len(ln.lstrip(" "))
            if ind <= indent:
                break
            if block_indent is None:
                block_indent = ind
            if ind < block_indent:
                break
            lines.append(ln[block_indent:])
            j += 1
        while self.i < len(self.items) and self.items[self.i][2] < j:
            self.i += 1
        body_end = len(lines)
        while body_end > 0 and lines[body_end - 1] == "":
            body_end -= 1
        trailing = lines[body_end:]
        lines = lines[:body_end]
        if folded:
            text, prev_blank = "", True
            for ln in lines:
                if ln == "":
                    text += "\n"
                    prev_blank = True
                elif ln.startswith(" "):
                    text += ("\n" if not prev_blank else "") + ln
                    prev_blank = False
                else:
                    text += ("" if prev_blank else " ") + ln
                    prev_blank = False
        else:
            text = "\n".join(lines)
        if chomp == "-":
            return text
        if chomp == "+":
            return text + "\n" + "\n" * len(trailing)
        return text + "\n" if lines else ""

    @staticmethod
    def scalar(s):
        if s[0] == "'":
            end = _MiniYaml._quote_end(s)
            return s[1:end].replace("''", "'")
        if s[0] == '"':
            end = _MiniYaml._quote_end(s)
            inner = s[1:end]
            try:
                return json.loads('"' + inner.replace("\\/", "/") + '"')
            except ValueError:
                return inner.encode().decode("unicode_escape")
        s = re.sub(r"\s+#.*$", "", s).strip()
        if s in ("null", "Null", "NULL", "~", ""):
            return None
        if s in ("true", "True", "TRUE"):
            return True
        if s in ("false", "False", "FALSE"):
            return False
        if re.fullmatch(r"[-+]?[0-9]+", s):
            return int(s)
        if re.fullmatch(r"0x[0-9a-fA-F]+", s):
            return int(s, 16)
        if re.fullmatch(r"0o[0-7]+", s):
            return int(s[2:], 8)
        if re.fullmatch(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?", s):
            return float(s)
        if s in (".inf", ".Inf", "+.inf"):
            return float("inf")
        if s in ("-.inf", "-.Inf"):
            return float("-inf")
        if s in (".nan", ".NaN"):
            return float("nan")
        return s

    @staticmethod
    def _quote_end(s):
        q = s[0]
        j = 1
        while j < len(s):
            if s[j] == q:
                if q == "'" and j + 1 < len(s) and s[j + 1] == "'":
                    j += 2
                    continue
                if q == '"' and s[j - 1] == "\\":
                    j += 1
                    continue
                return j
            j += 1
        raise ValueError(f"YAML: unterminated quoted scalar: {s!r}")

    def flow(self, s):
        pos = [0]

        def ws():
            while pos[0] < len(s) and s[pos[0]] in " \t":
                pos[0] += 1

        def item():
            ws()
            c = s[pos[0]]
            if c == "[":
                pos[0] += 1
                out = []
                ws()
                if s[pos[0]] == "]":
                    pos[0] += 1
                    return out
                while True:
                    out.append(item())
                    ws()
                    c = s[pos[0]]
                    pos[0] += 1
                    if c == "]":
                        return out
                    if c != ",":
                        raise ValueError(f"YAML: bad flow sequence: {s!r}")
                    ws()
                    if s[pos[0]] == "]":
                        pos[0] += 1
                        return out
            if c == "{":
                pos[0] += 1
                out = {}
                ws()
                if s[pos[0]] == "}":
                    pos[0] += 1
                    return out
                while True:
                    k = item()
                    ws()
                    if s[pos[0]] != ":":
                        raise ValueError(f"YAML: bad flow mapping: {s!r}")
                    pos[0] += 1
                    out[k] = item()
                    ws()
                    c = s[pos[0]]
                    pos[0] += 1
                    if c == "}":
                        return out
                    if c != ",":
                        raise ValueError(f"YAML: bad flow mapping: {s!r}")
                    ws()
                    if s[pos[0]] == "}":
                        pos[0] += 1
                        return out
            if c in "\"'":
                end = pos[0] + self._quote_end(s[pos[0]:])
                v = self.scalar(s[pos[0]:end + 1])
                pos[0] = end + 1
                return v
            m = re.compile(r"[^,\[\]{}]*?(?=\s*(:\s|:$|,|\]|\}))").match(s, pos[0])
            if not m:
                raise ValueError(f"YAML: bad flow scalar in {s!r}")
            pos[0] = m.end()
            return self.scalar(m.group(0).strip())

        v = item()
        ws()
        if pos[0] < len(s) and not s[pos[0]:].lstrip().startswith("#"):
            raise ValueError(f"YAML: trailing characters after flow collection: {s!r}")
        return v


# ---------------------------------------------------------------- CRD schemas (structural)


def schema_prune_default(value, schema, root=False):
    """What the API server does to a custom resource before validation:
    unknown fields pruned (unless x-kubernetes-preserve-unknown-fields), then
    `default`s filled in for missing fields (nulls dropped by the caller)."""
    if not isinstance(schema, dict):
        return value
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        addl = schema.get("additionalProperties")
        keep = schema.get("x-kubernetes-preserve-unknown-fields") is True
        embedded = schema.get("x-kubernetes-embedded-resource") is True
        out = {}
        for k, v in value.items():
            if root and k in ("apiVersion", "kind", "metadata"):
                out[k] = v
            elif k in props:
                out[k] = schema_prune_default(v, props[k])
            elif isinstance(addl, dict):
                out[k] = schema_prune_default(v, addl)
            elif addl is True or keep or (embedded and k in ("apiVersion", "kind", "metadata")):
                out[k] = v
        for k, ps in props.items():
            if (out.get(k) is None) and isinstance(ps, dict) and "default" in ps and not (root and k == "metadata"):
                if k in out and ps.get("nullable"):
                    continue  # an explicit null of a nullable field stays null
                out[k] = schema_prune_default(copy.deepcopy(ps["default"]), ps)
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [schema_prune_default(x, schema["items"]) for x in value]
    return value


def _fmt_num(n):
    return str(int(n)) if isinstance(n, float) and n.is_integer() else str(n)


def _type_name(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def schema_validate(inv, value, schema, path):
    """OpenAPI v3 checks of the API server (type, enum, required, bounds,
    lengths, pattern, items, properties). CEL rules (x-kubernetes-validations)
    are NOT evaluated."""
    if not isinstance(schema, dict):
        return
    if value is None:
        if not schema.get("nullable"):
            inv.add(path, f'Invalid value: "null": {path} in body must be of type {schema.get("type", "object")}: "null"',
                    "FieldValueTypeInvalid")
        return
    t = schema.get("type")
    if schema.get("x-kubernetes-int-or-string"):
        if not (isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))):
            inv.add(path, f'Invalid value: "{_type_name(value)}": {path} in body must be of type int-or-string: '
                          f'"{_type_name(value)}"', "FieldValueTypeInvalid")
            return
    elif t:
        ok = {"object": isinstance(value, dict), "array": isinstance(value, list), "string": isinstance(value, str),
              "boolean": isinstance(value, bool),
              "integer": isinstance(value, int) and not isinstance(value, bool),
              "number": isinstance(value, (int, float)) and not isinstance(value, bool)}.get(t, True)
        if not ok:
            inv.add(path, f'Invalid value: "{_type_name(value)}": {path} in body must be of type {t}: '
                          f'"{_type_name(value)}"', "FieldValueTypeInvalid")
            return
    if "enum" in schema and value not in schema["enum"]:
        inv.add(path, f"Unsupported value: {json.dumps(value)}: supported values: "
                      + ", ".join(json.dumps(e) for e in schema["enum"]), "FieldValueNotSupported")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        lo, hi = schema.get("minimum"), schema.get("maximum")
        if lo is not None:
            if schema.get("exclusiveMinimum") and value <= lo:
                inv.add(path, f"Invalid value: {_fmt_num(value)}: {path} in body should be greater than {_fmt_num(lo)}")
            elif value < lo:
                inv.add(path, f"Invalid value: {_fmt_num(value)}: {path} in body should be greater than or equal "
                              f"to {_fmt_num(lo)}")
        if hi is not None:
            if schema.get("exclusiveMaximum") and value >= hi:
                inv.add(path, f"Invalid value: {_fmt_num(value)}: {path} in body should be less than {_fmt_num(hi)}")
            elif value > hi:
                inv.add(path, f"Invalid value: {_fmt_num(value)}: {path} in body should be less than or equal "
                              f"to {_fmt_num(hi)}")
        if schema.get("format") == "int32" and isinstance(value, int) and not -2**31 <= value < 2**31:
            inv.add(path, f"Invalid value: {value}: {path} in body must be of type int32")
    if isinstance(value, str):
        if schema.get("minLength") is not None and len(value) < schema["minLength"]:
            inv.add(path, f'Invalid value: "{value}": {path} in body should be at least {schema["minLength"]} chars long')
        if schema.get("maxLength") is not None and len(value) > schema["maxLength"]:
            inv.add(path, f"Too long: may not be more than {schema['maxLength']} bytes", "FieldValueTooLong")
        if schema.get("pattern") and not re.search(schema["pattern"], value):
            inv.add(path, f"Invalid value: \"{value}\": {path} in body should match '{schema['pattern']}'")
    if isinstance(value, list):
        if schema.get("minItems") is not None and len(value) < schema["minItems"]:
            inv.add(path, f"Invalid value: {len(value)}: {path} in body should have at least {schema['minItems']} items")
        if schema.get("maxItems") is not None and len(value) > schema["maxItems"]:
            inv.add(path, f"Too many: {len(value)}: must have at most {schema['maxItems']} items", "FieldValueTooMany")
        if isinstance(schema.get("items"), dict):
            for i, x in enumerate(value):
                schema_validate(inv, x, schema["items"], f"{path}[{i}]")
    if isinstance(value, dict):
        for k in schema.get("required") or []:
            if k not in value:
                inv.add(f"{path}.{k}" if path else k, "Required value", "FieldValueRequired")
        if schema.get("minProperties") is not None and len(value) < schema["minProperties"]:
            inv.add(path, f"Invalid value: {len(value)}: {path} in body should have at least "
                          f"{schema['minProperties']} properties")
        if schema.get("maxProperties") is not None and len(value) > schema["maxProperties"]:
            inv.add(path, f"Too many: {len(value)}: must have at most {schema['maxProperties']} items",
                    "FieldValueTooMany")
        props = schema.get("properties") or {}
        addl = schema.get("additionalProperties")
        for k, v in value.items():
            sub = f"{path}.{k}" if path else k
            if k in props:
                schema_validate(inv, v, props[k], sub)
            elif isinstance(addl, dict):
                schema_validate(inv, v, addl, f"{path}[{k}]")


def count_cel_rules(schema):
    n = 0
    if isinstance(schema, dict):
        n += len(schema.get("x-kubernetes-validations") or [])
        for v in schema.values():
            n += count_cel_rules(v)
    elif isinstance(schema, list):
        for v in schema:
            n += count_cel_rules(v)
    return n


# ---------------------------------------------------------------- workloads (apps/v1 Deployment, batch/v1 CronJob)


def selector_matches(sel, labels):
    """A metav1.LabelSelector (matchLabels + matchExpressions) against labels."""
    labels = labels or {}
    for k, v in (sel.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in sel.get("matchExpressions") or []:
        k, op, vals = e.get("key"), e.get("operator"), e.get("values") or []
        if op == "In" and labels.get(k) not in vals:
            return False
        if op == "NotIn" and k in labels and labels[k] in vals:
            return False
        if op == "Exists" and k not in labels:
            return False
        if op == "DoesNotExist" and k in labels:
            return False
    return True


CRON_MACROS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}


def cron_error(s):
    if not isinstance(s, str) or not s.strip():
        return "Required value"
    s = s.strip()
    if s in CRON_MACROS or re.fullmatch(r"@every\s+\S+", s):
        return None
    if s.startswith(("TZ=", "CRON_TZ=")):
        return f'Invalid value: "{s}": cannot use TZ or CRON_TZ in schedule, use timeZone field instead'
    fields = s.split()
    if len(fields) != 5:
        return f'Invalid value: "{s}": expected exactly 5 fields, found {len(fields)}: {s}'
    names = r"(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec|sun|mon|tue|wed|thu|fri|sat)"
    atom = rf"(\*|\?|\d+|{names})(-(\d+|{names}))?(/\d+)?"
    bounds = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]
    for f, (lo, hi) in zip(fields, bounds):
        for part in f.lower().split(","):
            if not re.fullmatch(atom, part):
                return f'Invalid value: "{s}": failed to parse: {f}'
            for n in re.findall(r"(?<![/\d])\d+", part):
                if not lo <= int(n) <= hi:
                    return f'Invalid value: "{s}": end of range ({n}) above maximum ({hi}): {f}' if int(n) > hi \
                        else f'Invalid value: "{s}": beginning of range ({n}) below minimum ({lo}): {f}'
    return None


# ---------------------------------------------------------------- store (kmock)


class Store:
    """Reads and writes kmock's emulator over its internal HTTP port."""

    def __init__(self, base, emulator):
        self.base = base.rstrip("/")
        self.session = None
        self.emulator = emulator
        self.ops = 0
        self.deleted_seen = {}

    def tick(self):
        """Every 200 calls, keeps kmock 0.8 from slowing down (it is pinned; these are its
        private attributes): it records every request and matching one walks them all (so
        each request costs O(requests so far)): only the recent ones are kept; it keeps
        every version of every object: only the last one is kept; soft-deleted objects
        are dropped once they have been deleted for 10 s (no request is still using them)."""
        self.ops += 1
        if self.ops % 200:
            return
        e = self.emulator
        if len(e._requests) > 256:
            del e._requests[:-128]
        for p in e._payloads:
            if len(p._requests) > 256:
                del p._requests[:-128]
        now = time.monotonic()
        for key, obj in list(e.objects.items()):
            if obj.deleted:
                if now - self.deleted_seen.setdefault(key, now) > 10:
                    del e.objects[key]
                    del self.deleted_seen[key]
            else:
                self.deleted_seen.pop(key, None)
                if len(obj.history) > 2:
                    del obj.history[:-1]

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
        self.tick()
        async with self.session.get(self.url(res, ns, name)) as r:
            if r.status == 404:
                return None
            r.raise_for_status()
            return await r.json(content_type=None)

    async def list(self, res, ns=None):
        self.tick()
        async with self.session.get(self.url(res, ns)) as r:
            if r.status == 404:
                return []
            r.raise_for_status()
            return (await r.json(content_type=None)).get("items") or []

    async def create(self, res, ns, obj):
        self.tick()
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
        self.tick()
        async with self.session.patch(self.url(res, ns, name), data=json.dumps(patch),
                                      headers={"Content-Type": "application/merge-patch+json"}) as r:
            if r.status == 404:
                raise not_found(res, name)
            r.raise_for_status()

    async def delete(self, res, ns, name):
        self.tick()
        async with self.session.delete(self.url(res, ns, name)) as r:
            if r.status == 404:
                return False
            r.raise_for_status()
            return True



# ---------------------------------------------------------------- the API front

HISTORY_EVENTS = 4000      # watch events kept for resuming; older resourceVersions get 410 Gone
BOOKMARK_SECONDS = 30.0    # a BOOKMARK this often on watches that allow them (and before a timeout close)
# Built-in resources whose metadata.generation the real server maintains
# (custom resources always have one).
GENERATION_RESOURCES = {("batch", "jobs"), ("batch", "cronjobs"), ("apps", "deployments"), ("apps", "statefulsets"),
                        ("apps", "daemonsets"), ("apps", "replicasets")}
# What the garbage-collector stand-in looks at as dependents, besides every
# custom resource. Pods are the kubelet stand-in's (it kills their processes).
GC_DEPENDENTS = [("", "v1", "secrets"), ("", "v1", "configmaps"), ("apps", "v1", "deployments"),
                 ("batch", "v1", "cronjobs"), ("batch", "v1", "jobs"), ("coordination.k8s.io", "v1", "leases")]
CRD_KEY = ("apiextensions.k8s.io", "v1", "customresourcedefinitions")
DEPLOYMENTS_KEY = ("apps", "v1", "deployments")
CRONJOBS_KEY = ("batch", "v1", "cronjobs")
EVENTS_KEY = ("events.k8s.io", "v1", "events")


class Watcher:
    """One open watch: the events of its resource (and namespace) are queued here."""

    def __init__(self, key, ns):
        self.key, self.ns = key, ns
        self.queue = asyncio.Queue()


def res_key(res):
    return (res.group or "", res.version, res.plural)


def has_status(info):
    return "status" in (info.subresources or ())


def partial_meta(obj):
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata") or {}}


def normalize_meta(meta):
    """Empty lists and maps in metadata are omitted, as the real server's Go types do."""
    for k in ("finalizers", "ownerReferences", "labels", "annotations", "managedFields"):
        if k in meta and not meta[k]:
            del meta[k]


def removed_fields(prev, new):
    """A merge patch deleting what prev (a manager's last applied configuration) set and new no longer sets."""
    out = {}
    for k, v in prev.items():
        if k not in new:
            out[k] = None
        elif isinstance(v, dict) and isinstance(new[k], dict):
            sub = removed_fields(v, new[k])
            if sub:
                out[k] = sub
    return out


def prepare_deployment(inv, res, obj, old):
    """apps/v1 Deployment: the real server's defaults and the validation an operator can get wrong."""
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    strat = spec.setdefault("strategy", {})
    if isinstance(strat, dict):
        strat.setdefault("type", "RollingUpdate")
        if strat["type"] == "RollingUpdate":
            ru = strat.setdefault("rollingUpdate", {})
            ru.setdefault("maxUnavailable", "25%")
            ru.setdefault("maxSurge", "25%")
        elif strat["type"] != "Recreate":
            inv.add("spec.strategy.type", f'Unsupported value: "{strat["type"]}": supported values: "Recreate", '
                                          f'"RollingUpdate"', "FieldValueNotSupported")
    tmpl = spec.setdefault("template", {})
    if not isinstance(tmpl, dict) or not isinstance(tmpl.setdefault("spec", {}), dict):
        raise bad_request("json: cannot unmarshal into Go struct field DeploymentSpec.spec.template of type object")
    tspec = tmpl["spec"]
    default_pod_spec(tspec)
    if old is None:
        obj["status"] = {}
    sel = spec.get("selector")
    labels = (tmpl.get("metadata") or {}).get("labels") or {}
    if not isinstance(sel, dict) or not sel:
        inv.add("spec.selector", "Required value", "FieldValueRequired")
    elif not (sel.get("matchLabels") or sel.get("matchExpressions")):
        inv.add("spec.selector", "Invalid value: {}: empty selector is invalid for deployment")
    elif not selector_matches(sel, labels):
        inv.add("spec.template.metadata.labels", f"Invalid value: {json.dumps(labels, sort_keys=True)}: "
                                                 f"`selector` does not match template `labels`")
    if old is not None and (old.get("spec") or {}).get("selector") != sel:
        inv.add("spec.selector", f"Invalid value: {json.dumps(sel)}: field is immutable")
    for key in ("replicas", "revisionHistoryLimit", "minReadySeconds", "progressDeadlineSeconds"):
        v = spec.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            inv.add("spec." + key, f"Invalid value: {v!r}: must be greater than or equal to 0")
    validate_metadata(inv, tmpl.get("metadata") or {}, res, "spec.template.metadata", need_name=False)
    validate_pod_spec(inv, tspec, "spec.template.spec")
    rp = tspec.get("restartPolicy")
    if rp != "Always":
        inv.add("spec.template.spec.restartPolicy", f'Unsupported value: "{rp}": supported values: "Always"',
                "FieldValueNotSupported")


def prepare_cronjob(inv, res, obj, old):
    """batch/v1 CronJob: the real server's defaults and the validation an operator can get wrong."""
    spec = obj.setdefault("spec", {})
    spec.setdefault("concurrencyPolicy", "Allow")
    spec.setdefault("suspend", False)
    spec.setdefault("successfulJobsHistoryLimit", 3)
    spec.setdefault("failedJobsHistoryLimit", 1)
    jt = spec.setdefault("jobTemplate", {})
    jspec = jt.setdefault("spec", {}) if isinstance(jt, dict) else None
    tmpl = jspec.setdefault("template", {}) if isinstance(jspec, dict) else None
    tspec = tmpl.setdefault("spec", {}) if isinstance(tmpl, dict) else None
    if not isinstance(tspec, dict):
        raise bad_request("json: cannot unmarshal into Go struct field CronJobSpec.spec.jobTemplate of type object")
    default_pod_spec(tspec, job=True)
    if old is None:
        obj["status"] = {}
    name = obj["metadata"].get("name") or ""
    if len(name) > 52:
        inv.add("metadata.name", f'Invalid value: "{name}": must be no more than 52 characters')
    err = cron_error(spec.get("schedule"))
    if err:
        inv.add("spec.schedule", err, "FieldValueRequired" if err == "Required value" else "FieldValueInvalid")
    cp = spec.get("concurrencyPolicy")
    if cp not in ("Allow", "Forbid", "Replace"):
        inv.add("spec.concurrencyPolicy", f'Unsupported value: "{cp}": supported values: "Allow", "Forbid", "Replace"',
                "FieldValueNotSupported")
    for key in ("successfulJobsHistoryLimit", "failedJobsHistoryLimit", "startingDeadlineSeconds"):
        v = spec.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            inv.add("spec." + key, f"Invalid value: {v!r}: must be greater than or equal to 0")
    for key in ("backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished", "parallelism", "completions"):
        v = jspec.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            inv.add("spec.jobTemplate.spec." + key, f"Invalid value: {v!r}: must be greater than or equal to 0")
    validate_metadata(inv, tmpl.get("metadata") or {}, res, "spec.jobTemplate.spec.template.metadata",
                      need_name=False)
    validate_pod_spec(inv, tspec, "spec.jobTemplate.spec.template.spec", job=True)


def prepare_event(inv, obj, old):
    """events.k8s.io/v1 Event (kube-runtime's Recorder): the real server's create checks."""
    if old is None and not obj.get("eventTime"):
        inv.add("eventTime", "Required value", "FieldValueRequired")
    if obj.get("type") not in ("Normal", "Warning"):
        inv.add("type", f'Invalid value: "": has invalid value: {obj.get("type") or ""}')
    rc = obj.get("reportingController") or ""
    if not rc:
        inv.add("reportingController", "Required value", "FieldValueRequired")
    else:
        check_qualified_key(inv, "reportingController", rc)
    for field, limit in (("reportingInstance", 128), ("action", 128), ("reason", 128)):
        v = obj.get(field) or ""
        if not v:
            inv.add(field, "Required value", "FieldValueRequired")
        elif len(v) > limit:
            inv.add(field, f'Invalid value: "": can have at most {limit} characters')
    if len(obj.get("note") or "") > 1024:
        inv.add("note", 'Invalid value: "": can have at most 1024 characters')
    series = obj.get("series")
    if series is not None:
        if not isinstance(series.get("count"), int) or series["count"] < 2:
            inv.add("series.count", 'Invalid value: "": should be at least 2')
        if not series.get("lastObservedTime"):
            inv.add("series.lastObservedTime", "Required value", "FieldValueRequired")
    for field in ("deprecatedFirstTimestamp", "deprecatedLastTimestamp", "deprecatedCount", "deprecatedSource"):
        if old is None and obj.get(field):
            inv.add(field, 'Invalid value: "": needs to be unset', "FieldValueInvalid")


def prepare_crd(inv, obj, old):
    """apiextensions.k8s.io/v1 CustomResourceDefinition: the checks that matter here, and a status."""
    spec = obj.get("spec") or {}
    meta = obj["metadata"]
    group = spec.get("group") or ""
    names = spec.get("names") if isinstance(spec.get("names"), dict) else {}
    plural, kind = names.get("plural"), names.get("kind")
    if not group or "." not in group or not DNS1123_SUBDOMAIN.match(group):
        inv.add("spec.group", f'Invalid value: "{group}": should be a domain with at least one dot')
    if not plural or not DNS1123_LABEL.match(plural):
        inv.add("spec.names.plural", f'Invalid value: "{plural}": a lowercase RFC 1123 label is required',
                "FieldValueRequired" if not plural else "FieldValueInvalid")
    if not kind:
        inv.add("spec.names.kind", "Required value", "FieldValueRequired")
    if plural and group and meta.get("name") != f"{plural}.{group}":
        inv.add("metadata.name", f'Invalid value: "{meta.get("name")}": must be spec.names.plural+"."+spec.group')
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        inv.add("spec.scope", f'Unsupported value: "{spec.get("scope")}": supported values: "Cluster", "Namespaced"',
                "FieldValueNotSupported")
    versions = spec.get("versions") if isinstance(spec.get("versions"), list) else []
    if not versions:
        inv.add("spec.versions", "Invalid value: must have exactly one version marked as storage version",
                "FieldValueRequired")
    elif sum(1 for v in versions if v.get("storage")) != 1:
        inv.add("spec.versions", "Invalid value: must have exactly one version marked as storage version")
    for i, v in enumerate(versions):
        if not isinstance(v, dict) or not v.get("name"):
            inv.add(f"spec.versions[{i}].name", "Required value", "FieldValueRequired")
        elif not ((v.get("schema") or {}).get("openAPIV3Schema")):
            inv.add(f"spec.versions[{i}].schema.openAPIV3Schema", "Required value: schemas are required",
                    "FieldValueRequired")
    if old is None and not inv.causes:
        accepted = dict(names)
        accepted.setdefault("singular", kind.lower())
        accepted.setdefault("listKind", kind + "List")
        names.setdefault("singular", kind.lower())
        names.setdefault("listKind", kind + "List")
        t = now_rfc3339()
        obj["status"] = {
            "acceptedNames": accepted,
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "lastTransitionTime": t, "reason": "NoConflicts",
                 "message": "no conflicts found"},
                {"type": "Established", "status": "True", "lastTransitionTime": t, "reason": "InitialNamesAccepted",
                 "message": "the initial names have been accepted"}],
            "storedVersions": [v["name"] for v in versions if v.get("storage")]}


class Front:
    def __init__(self, emulator, store, args):
        self.k = emulator
        self.store = store
        self.args = args
        self.token = args.token
        self.lock = asyncio.Lock()    # every write, list snapshot and watch start holds it
        self.rv = 1                   # the global resourceVersion counter
        self.published_rv = 1         # the newest resourceVersion on the event bus
        self.history = collections.deque(maxlen=HISTORY_EVENTS)  # (rv, key, ns, type, obj, previous obj)
        self.history_floor = 0        # a watch from a resourceVersion below this gets 410 Gone
        self.watchers = set()
        self.state_dir = args.state_dir
        self.server_address = None
        # (group, version, plural) -> (kmock resource, ResourceInfo): kmock's
        # bundled discovery plus the CRDs installed.
        self.resources = {}
        self.kinds = {}        # (apiVersion, kind) -> (group, version, plural), for ownerReferences
        self.crds = {}         # (group, version, plural) -> {"schema": openAPIV3Schema, "name": crd name}
        self.applied = {}      # (uid, fieldManager) -> the last applied configuration (server-side apply)
        self.foreground = {}   # uid -> (res, ns, name) of objects in foreground deletion (non-Jobs)
        self.gc_wake = asyncio.Event()
        self.closing = False   # set on SIGTERM: open watches end within a second
        for res in emulator.resources:
            if res.plural and "/" not in res.plural:
                info = emulator.resources[res]
                self.resources[res_key(res)] = (res, info)
                if info.kind:
                    self.kinds.setdefault((self.api_version(res), info.kind), res_key(res))

    def next_rv(self):
        self.rv += 1
        return str(self.rv)

    # ---- CRDs

    def register_crd(self, crd):
        """Serve the custom resource a (validated) CRD defines: its storage version only."""
        spec = crd["spec"]
        names = spec["names"]
        group, plural, kind = spec["group"], names["plural"], names["kind"]
        versions = [v for v in spec["versions"] if v.get("served", True)]
        storage = next((v for v in spec["versions"] if v.get("storage")), versions[0] if versions else None)
        if storage is None:
            return
        if len(versions) > 1:
            log(f"CRD {crd['metadata']['name']}: serves {[v['name'] for v in versions]}; the stand-in serves only "
                f"the storage version {storage['name']} (no conversion)")
        version = storage["name"]
        res = kmock.resource(group=group, version=version, plural=plural)
        subs = {"status"} if "status" in (storage.get("subresources") or {}) else set()
        if "scale" in (storage.get("subresources") or {}):
            log(f"CRD {crd['metadata']['name']}: the scale subresource is not served")
        self.k.resources[res] = kmock.ResourceInfo(
            kind=kind, singular=names.get("singular") or kind.lower(), namespaced=spec["scope"] == "Namespaced",
            verbs={"delete", "deletecollection", "get", "list", "patch", "create", "update", "watch"},
            shortnames=set(names.get("shortNames") or []), categories=set(names.get("categories") or []),
            subresources=subs)
        key = (group, version, plural)
        self.resources[key] = (res, self.k.resources[res])
        schema = (storage.get("schema") or {}).get("openAPIV3Schema") or {}
        self.crds[key] = {"schema": schema, "name": crd["metadata"]["name"]}
        self.kinds[(f"{group}/{version}", kind)] = key
        cel = count_cel_rules(schema)
        log(f"serving {kind} ({group}/{version}, {plural}, {spec['scope']}"
            f"{', status subresource' if subs else ''}){f'; its {cel} CEL rule(s) are NOT enforced' if cel else ''}")

    async def install_crd_file(self, path):
        """--crd FILE: every CustomResourceDefinition in it is created (and served) before the stand-in is ready."""
        with open(path) as f:
            docs = yaml_load_all(f.read())
        crds = []
        for d in docs:
            if isinstance(d, dict) and d.get("kind") == "List":
                crds += d.get("items") or []
            else:
                crds.append(d)
        res, info = self.resources[CRD_KEY]
        for i, d in enumerate(crds):
            if not isinstance(d, dict) or d.get("kind") != "CustomResourceDefinition" \
                    or d.get("apiVersion") != "apiextensions.k8s.io/v1":
                raise SystemExit(f"kube_standin.py: --crd {path}: document {i + 1} is not an "
                                 f"apiextensions.k8s.io/v1 CustomResourceDefinition")
            try:
                async with self.lock:
                    await self.create_locked(res, info, None, d)
            except ApiError as e:
                raise SystemExit(f"kube_standin.py: --crd {path}: {e.code} {e.reason}: {e.message}")

    # ---- the event bus (watches)

    def publish(self, res, etype, obj, prev=None):
        """Called with the lock held, in resourceVersion order."""
        rv = int(obj["metadata"]["resourceVersion"])
        ev = (rv, res_key(res), obj["metadata"].get("namespace"), etype, copy.deepcopy(obj),
              copy.deepcopy(prev) if prev is not None else None)
        if len(self.history) == self.history.maxlen:
            self.history_floor = self.history[0][0]
        self.history.append(ev)
        self.published_rv = max(self.published_rv, rv)
        for w in list(self.watchers):
            if w.key == ev[1] and (w.ns is None or w.ns == ev[2]):
                w.queue.put_nowait(ev)
        self.gc_wake.set()

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

    def reply(self, request, obj, status=200, headers=None):
        """An object, as PartialObjectMetadata when the client's Accept asked for it."""
        if request.get("meta_as") and isinstance(obj, dict) and obj.get("kind") != "Status":
            obj = partial_meta(obj)
        return self.json_response(obj, status, headers)

    @staticmethod
    def accept_as(request):
        """None for plain JSON, or "PartialObjectMetadata" / "PartialObjectMetadataList" when the Accept
        header asks for metadata only (kube-rs list_metadata / watch_metadata, Controller::owns)."""
        acc = request.headers.get("Accept", "")
        others = False
        for part in acc.split(","):
            p = part.strip().replace(" ", "")
            if not p:
                continue
            mt, _, params = p.partition(";")
            if mt not in ("application/json", "*/*", "application/*"):
                others = True
                continue
            ps = dict(x.split("=", 1) for x in params.split(";") if "=" in x)
            if "as" not in ps:
                return None
            if ps["as"] in ("PartialObjectMetadata", "PartialObjectMetadataList") and ps.get("g") == "meta.k8s.io" \
                    and ps.get("v") in ("v1", "v1beta1"):
                return ps["as"]
            others = True  # Table and other conversions are not served
        if others:
            raise ApiError(406, "NotAcceptable", f"only the following media types are accepted: application/json, "
                                                 f"application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1 "
                                                 f"(asked: {acc})")
        return None

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
        if sub is not None and (sub not in ("status", "log") or (sub == "status" and not has_status(info))):
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        if sub == "log":
            if res.plural != "pods" or method != "GET":
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
            return await self.pod_log(request, res, ns, name, q)
        watching = method == "GET" and q.get("watch") in ("true", "1")
        meta_as = self.accept_as(request)
        if meta_as == "PartialObjectMetadataList" and not watching and (name is not None or method != "GET"):
            raise ApiError(406, "NotAcceptable", "PartialObjectMetadataList is only served for lists")
        if meta_as == "PartialObjectMetadata" and not watching and name is None and method in ("GET", "DELETE"):
            raise ApiError(406, "NotAcceptable", "a list is served as PartialObjectMetadataList, not "
                                                 "PartialObjectMetadata")
        request["meta_as"] = meta_as
        if name is None:
            if watching:
                return await self.watch(request, res, info, ns, q)
            if method == "GET":
                return await self.list(request, res, info, ns, q)
            if method == "POST":
                if info.namespaced and ns is None:
                    raise ApiError(405, "MethodNotAllowed",
                                   "the server does not allow this method on the requested resource")
                return await self.create(request, res, info, ns, q)
            if method == "DELETE":
                return await self.delete_collection(request, res, info, ns, q)
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        if method == "GET":
            if watching:
                return await self.watch(request, res, info, ns, q, name=name)
            obj = await self.store.get(res, ns, name)
            if obj is None:
                raise not_found(res, name)
            return self.reply(request, obj)
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
                if "/" in r.get("name", ""):
                    r["singularName"] = ""
                    r.pop("shortNames", None)
                    r.pop("categories", None)
                if r.get("name") == "pods/log":
                    r["verbs"] = ["get"]
                elif r.get("name", "").endswith(("/status", "/scale")):
                    r["verbs"] = ["get", "patch", "update"]
                else:
                    r["verbs"] = sorted(r.get("verbs") or [])
                for k in ("shortNames", "categories"):
                    if k in r and not r[k]:
                        del r[k]
            doc["resources"] = sorted(doc.get("resources") or [], key=lambda r: r.get("name", ""))
        if isinstance(doc, dict) and doc.get("kind") == "APIGroupList":
            for g in doc.get("groups") or []:
                g.setdefault("serverAddressByClientCIDRs", [])
            doc["groups"] = sorted(doc.get("groups") or [], key=lambda g: g.get("name", ""))
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

    async def list(self, request, res, info, ns, q):
        async with self.lock:  # a snapshot: a watch from this resourceVersion misses nothing
            items = await self.select(res, ns, q)
            meta = {"resourceVersion": str(self.rv)}
        cont = q.get("continue")
        if cont:
            try:
                token = json.loads(base64.urlsafe_b64decode(cont.encode()))
                after = (token[0], token[1])
            except Exception:
                raise bad_request("continue key is not valid")
            # Every page names the first page's resourceVersion, as a real server's continue
            # tokens do (items changed since then come as they are now: a watch from that
            # resourceVersion replays their events, which a watcher applies idempotently).
            meta["resourceVersion"] = str(token[2]) if len(token) > 2 else meta["resourceVersion"]
            items = [o for o in items if ((o["metadata"].get("namespace") or ""), o["metadata"]["name"]) > after]
        limit = int(q.get("limit") or 0)
        if limit > 0 and len(items) > limit:
            last = items[limit - 1]["metadata"]
            meta["continue"] = base64.urlsafe_b64encode(
                json.dumps([last.get("namespace") or "", last["name"], meta["resourceVersion"]]).encode()).decode()
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        if request.get("meta_as"):
            return self.json_response({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                                       "metadata": meta, "items": [partial_meta(o) for o in items]})
        if res_key(res) not in self.crds:
            for o in items:  # a real server's list items of built-in types carry no kind/apiVersion
                o.pop("kind", None)
                o.pop("apiVersion", None)
        return self.json_response({"kind": f"{info.kind}List", "apiVersion": self.api_version(res),
                                   "metadata": meta, "items": items})

    @staticmethod
    def event_view(ev, lsel, fsel):
        """What a watcher with these selectors sees of an event (None: nothing), as a real
        server's: an object that starts or stops matching is ADDED or DELETED."""
        _, _, _, etype, obj, prev = ev

        def ok(o):
            return labels_match(lsel, (o.get("metadata") or {}).get("labels")) and fields_match(fsel, o)
        now = ok(obj)
        if etype == "MODIFIED":
            before = prev is not None and ok(prev)
            if now:
                return ("MODIFIED" if before else "ADDED"), obj
            return ("DELETED", obj) if before else None
        return (etype, obj) if now else None

    async def watch(self, request, res, info, ns, q, name=None):
        lsel, fsel = self.selectors(res, q)
        if name is not None:
            fsel.append(("metadata.name", "=", name))
        rv_param = q.get("resourceVersion") or ""
        initial = q.get("sendInitialEvents")
        bookmarks = q.get("allowWatchBookmarks") in ("true", "1")
        inv = Invalid()
        if initial is not None:
            if q.get("resourceVersionMatch") != "NotOlderThan":
                inv.add("resourceVersionMatch", "Forbidden: sendInitialEvents requires setting resourceVersionMatch "
                                                "to NotOlderThan", "FieldValueForbidden")
            if initial == "true" and not bookmarks:
                inv.add("allowWatchBookmarks", "Forbidden: sendInitialEvents requires setting allowWatchBookmarks "
                                               "to true", "FieldValueForbidden")
        elif q.get("resourceVersionMatch"):
            inv.add("resourceVersionMatch", "Forbidden: resourceVersionMatch is forbidden for watch unless "
                                            "sendInitialEvents is provided", "FieldValueForbidden")
        if inv.causes:
            raise ApiError(422, "Invalid", 'ListOptions.meta.k8s.io "" is invalid: ' + ", ".join(
                f'{c["field"]}: {c["message"]}' for c in inv.causes),
                {"group": "meta.k8s.io", "kind": "ListOptions", "causes": inv.causes})
        if rv_param and not rv_param.isdigit():
            raise bad_request(f'resourceVersion: Invalid value: "{rv_param}": invalid resource version')
        # Without sendInitialEvents: "" and "0" start with the current objects as ADDED; N replays
        # what happened after N. sendInitialEvents=true: the current objects, then a BOOKMARK
        # annotated k8s.io/initial-events-end (kube-rs watcher's streaming_lists()).
        snapshot = initial == "true" or (initial is None and rv_param in ("", "0"))
        timeout = float(q.get("timeoutSeconds") or 1800)
        meta_as = request.get("meta_as")
        key = res_key(res)
        w = Watcher(key, ns)
        gone = None
        first = []
        async with self.lock:
            if snapshot:
                for o in await self.store.list(res, ns):
                    m = o.get("metadata") or {}
                    if labels_match(lsel, m.get("labels")) and fields_match(fsel, o):
                        first.append(("ADDED", o))
                first.sort(key=lambda e: ((e[1]["metadata"].get("namespace") or ""), e[1]["metadata"]["name"]))
            else:
                since = int(rv_param)
                if since < self.history_floor:
                    gone = since
                else:
                    for ev in self.history:
                        if ev[0] > since and ev[1] == key and (ns is None or ev[2] == ns):
                            v = self.event_view(ev, lsel, fsel)
                            if v:
                                first.append(v)
            start_rv = self.rv
            if gone is None:
                self.watchers.add(w)
        kind, av = ("PartialObjectMetadata", "meta.k8s.io/v1") if meta_as else (info.kind, self.api_version(res))

        def bookmark(rv, end=False):
            m = {"resourceVersion": str(rv)}
            if end:
                m["annotations"] = {"k8s.io/initial-events-end": "true"}
            return {"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": av, "metadata": m}}

        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json",
                                                       "Cache-Control": "no-cache, private"})
        try:
            await resp.prepare(request)

            async def send(etype, obj):
                if meta_as:
                    obj = partial_meta(obj)
                await resp.write(json.dumps({"type": etype, "object": obj}).encode() + b"\n")

            async def send_raw(ev):
                await resp.write(json.dumps(ev).encode() + b"\n")

            if gone is not None:
                await send_raw({"type": "ERROR", "object": {
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": f"too old resource version: {gone} ({self.history_floor})",
                    "reason": "Expired", "code": 410}})
                return resp
            for etype, obj in first:
                await send(etype, obj)
            if initial == "true":
                await send_raw(bookmark(start_rv, end=True))
            deadline = time.monotonic() + timeout
            last_bookmark = time.monotonic()
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or self.closing:
                    break
                try:
                    ev = await asyncio.wait_for(w.queue.get(), min(left, 1.0))
                except asyncio.TimeoutError:
                    if request.transport is None or request.transport.is_closing():
                        break
                    if bookmarks and time.monotonic() - last_bookmark >= BOOKMARK_SECONDS and w.queue.empty():
                        await send_raw(bookmark(self.published_rv))
                        last_bookmark = time.monotonic()
                    continue
                v = self.event_view(ev, lsel, fsel)
                if v:
                    await send(*v)
            while not w.queue.empty():
                v = self.event_view(w.queue.get_nowait(), lsel, fsel)
                if v:
                    await send(*v)
            if bookmarks:
                await send_raw(bookmark(self.published_rv))
        except ConnectionResetError:
            pass
        finally:
            self.watchers.discard(w)
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
        key = res_key(res)
        if key in self.crds:
            # Structural schema: prune unknown fields, fill defaults, then the OpenAPI checks.
            schema = self.crds[key]["schema"]
            body = strip_nulls(schema_prune_default(obj, schema, root=True))
            body["metadata"] = meta  # the caller holds this dict
            obj.clear()
            obj.update(body)
            props = {k: v for k, v in (schema.get("properties") or {}).items()
                     if k not in ("apiVersion", "kind", "metadata")}
            root = dict(schema, properties=props,
                        required=[k for k in schema.get("required") or [] if k not in ("apiVersion", "kind", "metadata")])
            schema_validate(inv, {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")},
                            root, "")
        elif key == CRD_KEY:
            prepare_crd(inv, obj, old)
        elif key == EVENTS_KEY:
            prepare_event(inv, obj, old)
        elif key == DEPLOYMENTS_KEY:
            prepare_deployment(inv, res, obj, old)
        elif key == CRONJOBS_KEY:
            prepare_cronjob(inv, res, obj, old)
        elif res.plural == "secrets":
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
            for k, v in (obj.get("data") or {}).items():
                if not isinstance(v, str):
                    raise bad_request(f"json: cannot unmarshal {type(v).__name__} into Go struct field "
                                      f"ConfigMap.data of type string")
            if old is not None and old.get("immutable") and (old.get("data") != obj.get("data")
                                                             or old.get("binaryData") != obj.get("binaryData")):
                inv.add("data", "Forbidden: field is immutable when `immutable` is set", "FieldValueForbidden")
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
                for fkey in ("selector", "template", "completionMode", "podFailurePolicy"):
                    if (old.get("spec") or {}).get(fkey) != spec.get(fkey):
                        inv.add("spec." + fkey, "Invalid value: field is immutable", "FieldValueInvalid")
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
        dry = "All" in q.getall("dryRun", [])
        async with self.lock:
            obj = await self.create_locked(res, info, ns, obj, dry)
        return self.reply(request, obj, 201)

    async def create_locked(self, res, info, ns, obj, dry=False):
        obj = strip_nulls(obj)
        self.check_shapes(obj, info.kind)
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
        for key in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                    "generation", "selfLink", "managedFields"):
            meta.pop(key, None)
        key = res_key(res)
        if not meta.get("name") and meta.get("generateName"):
            for _ in range(10):
                meta["name"] = meta["generateName"] + gen_suffix()
                if await self.store.get(res, ns, meta["name"]) is None:
                    break
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        if key in self.crds or (res.group, res.plural) in GENERATION_RESOURCES:
            meta["generation"] = 1
        if key in self.crds and has_status(info):
            obj.pop("status", None)  # a create cannot set the status of a resource with a status subresource
        normalize_meta(meta)
        self.prepare(res, info, obj)
        if await self.store.get(res, ns, meta["name"]) is not None:
            raise already_exists(res, meta["name"])
        if not dry:
            meta["resourceVersion"] = self.next_rv()
            await self.store.create(res, ns, obj)
            self.publish(res, "ADDED", obj)
            if key == CRD_KEY:
                self.register_crd(obj)
        else:
            meta["resourceVersion"] = ""
        return obj

    # ---- update (PATCH, PUT; main resource or status)

    async def update(self, request, res, info, ns, name, sub, q):
        ctype = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if request.method == "PATCH" and ctype == "application/apply-patch+yaml":
            return await self.apply(request, res, info, ns, name, sub, q)
        if request.method == "PATCH" and ctype not in ("application/merge-patch+json", "application/json-patch+json",
                                                       "application/strategic-merge-patch+json"):
            raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format "
                                                        f"({ctype or 'no Content-Type'}) - accepted media types "
                                                        "include: application/json-patch+json, "
                                                        "application/merge-patch+json, "
                                                        "application/apply-patch+yaml, "
                                                        "application/strategic-merge-patch+json")
        if request.method == "PATCH" and q.get("force") is not None:
            raise ApiError(422, "Invalid", 'PatchOptions.meta.k8s.io "" is invalid: force: Forbidden: may not be '
                                           'specified for non-apply patch',
                           {"group": "meta.k8s.io", "kind": "PatchOptions", "causes": [
                               {"reason": "FieldValueForbidden", "message": "Forbidden: may not be specified for "
                                                                            "non-apply patch", "field": "force"}]})
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
                if new.get("kind") not in (None, info.kind) or new.get("apiVersion") not in (None, self.api_version(res)):
                    raise bad_request(f"the kind or API version in the data ({new.get('kind')}, "
                                      f"{new.get('apiVersion')}) does not match {info.kind}, {self.api_version(res)}")
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
                if res_key(res) in self.crds or res.group not in (
                        "", "batch", "apps", "policy", "autoscaling", "networking.k8s.io",
                        "rbac.authorization.k8s.io", "coordination.k8s.io", "storage.k8s.io"):
                    raise ApiError(415, "UnsupportedMediaType",
                                   "the body of the request was in an unknown format - accepted media types include: "
                                   "application/json-patch+json, application/merge-patch+json, "
                                   "application/apply-patch+yaml (strategic merge patch is not supported for "
                                   "custom resources)")
                if not isinstance(body, dict):
                    raise bad_request("a strategic merge patch must be a JSON object")
                self.check_patch_rv(res, name, cur, body)
                new = strategic_merge(cur, body)
            else:  # application/json-patch+json
                if not isinstance(body, list):
                    raise bad_request("a JSON patch must be a JSON array")
                try:
                    new = json_patch(cur, body)
                except ValueError as e:  # as the real server words it
                    raise ApiError(422, "Invalid", "the server rejected our request due to an error in our request",
                                   {"causes": [{"reason": "UnexpectedServerResponse", "message": str(e)}]})
                if isinstance(new, dict):
                    self.check_patch_rv(res, name, cur, new)
            return await self.commit_update(request, res, info, ns, name, sub, cur, new, dry)

    def check_patch_rv(self, res, name, cur, body):
        rv = (body.get("metadata") or {}).get("resourceVersion") if isinstance(body, dict) else None
        if rv and rv != cur["metadata"].get("resourceVersion"):
            raise conflict(res, name)

    async def commit_update(self, request, res, info, ns, name, sub, cur, new, dry=False):
        """The common tail of PUT, PATCH and apply: with the lock held, cur the stored object."""
        if not isinstance(new, dict) or not isinstance(new.get("metadata", {}), dict):
            raise bad_request("the result of the update is not an object")
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
        key = res_key(res)
        if sub == "status":
            self.check_shapes(new, info.kind)
            new = dict(copy.deepcopy(cur), status=new.get("status", {}))
        elif has_status(info) and "status" in cur:
            new["status"] = cur["status"]
        elif has_status(info):
            new.pop("status", None)
        normalize_meta(new["metadata"])
        if cur["metadata"].get("deletionTimestamp"):
            added = [f for f in new["metadata"].get("finalizers") or [] if f not in (cur["metadata"].get("finalizers") or [])]
            if added:
                raise ApiError(422, "Invalid", f'{info.kind} "{name}" is invalid: metadata.finalizers: Forbidden: no new '
                                               f"finalizers can be added if the object is being deleted, found new "
                                               f"finalizers {json.dumps(added)}",
                               details_for(res, name, [{"reason": "FieldValueForbidden", "field": "metadata.finalizers",
                                                        "message": "Forbidden: no new finalizers can be added if the "
                                                                   "object is being deleted"}]))
        if sub is None or key in self.crds:
            self.prepare(res, info, new, old=cur)
        if new == cur:  # a no-op: no new resourceVersion, no event
            return self.reply(request, cur)
        if "generation" in cur["metadata"]:
            if key in self.crds:
                skip = ("metadata", "status") if has_status(info) else ("metadata",)
                changed = {k: v for k, v in new.items() if k not in skip} != \
                    {k: v for k, v in cur.items() if k not in skip}
            else:
                changed = new.get("spec") != cur.get("spec")
            if changed:
                new["metadata"]["generation"] = cur["metadata"]["generation"] + 1
        if dry:
            return self.reply(request, new)
        new["metadata"]["resourceVersion"] = self.next_rv()
        await self.store.write(res, ns, name, cur, new)
        self.publish(res, "MODIFIED", new, cur)
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            await self.remove_object(res, ns, name, new)  # the last finalizer went
        return self.reply(request, new)

    async def remove_object(self, res, ns, name, last):
        """Removes a stored object; its DELETED event carries a fresh resourceVersion."""
        gone = copy.deepcopy(last)
        gone["metadata"]["resourceVersion"] = self.next_rv()
        await self.store.delete(res, ns, name)  # kmock may have dropped it already (no finalizers left)
        self.publish(res, "DELETED", gone, last)
        uid = gone["metadata"].get("uid")
        for k in [k for k in self.applied if k[0] == uid]:
            del self.applied[k]
        self.foreground.pop(uid, None)
        return gone

    # ---- server-side apply (APPROXIMATION)

    async def apply(self, request, res, info, ns, name, sub, q):
        """PATCH application/apply-patch+yaml. EMULATED: the configuration is merged into the object
        (RFC 7386: maps merged, lists replaced) and what this fieldManager applied last time but no
        longer applies is removed. No managedFields, no conflicts between managers (force or not),
        no list merging by key."""
        manager = q.get("fieldManager")
        if not manager:
            raise ApiError(422, "Invalid", 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: '
                                           'is required for apply patch',
                           {"group": "meta.k8s.io", "kind": "PatchOptions", "causes": [
                               {"reason": "FieldValueRequired", "message": "Required value: is required for apply "
                                                                           "patch", "field": "fieldManager"}]})
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            try:
                docs = yaml_load_all(raw.decode())
                body = docs[0] if len(docs) == 1 else None
            except Exception as e:
                raise bad_request(f"error decoding YAML: {e}")
        if not isinstance(body, dict):
            raise bad_request("the body of an apply patch must be one object")
        body = strip_nulls(body)
        api_version = self.api_version(res)
        if not body.get("apiVersion") or not body.get("kind"):
            raise bad_request(f"invalid object type: {body.get('apiVersion') or ''}, Kind={body.get('kind') or ''}")
        if body["apiVersion"] != api_version or body["kind"] != info.kind:
            raise bad_request(f"the kind or API version in the apply configuration ({body['kind']}, "
                              f"{body['apiVersion']}) does not match {info.kind}, {api_version}")
        meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        if meta.get("name") not in (None, name):
            raise bad_request(f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})")
        if info.namespaced and meta.get("namespace") not in (None, "", ns):
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
        if meta.get("managedFields"):
            raise bad_request("metadata.managedFields must be nil")
        dry = "All" in q.getall("dryRun", [])
        async with self.lock:
            cur = await self.store.get(res, ns, name)
            if cur is None:
                if sub is not None:
                    raise not_found(res, name)
                obj = copy.deepcopy(body)
                obj.setdefault("metadata", {})["name"] = name
                created = await self.create_locked(res, info, ns, obj, dry)
                if not dry:
                    self.applied[(created["metadata"]["uid"], manager)] = body
                return self.reply(request, created, 201)
            self.check_patch_rv(res, name, cur, body)
            uid = cur["metadata"]["uid"]
            patch = merge_patch(removed_fields(self.applied.get((uid, manager), {}), body), body)
            resp = await self.commit_update(request, res, info, ns, name, sub, cur, merge_patch(cur, patch), dry)
            if not dry:
                self.applied[(uid, manager)] = body
            return resp

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
        return self.reply(request, obj, status, headers)

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
        is_job = res.plural == "jobs" and res.group == "batch"
        headers = {}
        if is_job and policy is None and opts.get("orphanDependents") is None:
            # batch/v1 Jobs default to orphaning their pods; real servers warn.
            headers["Warning"] = ('299 - "child pods are preserved by default when jobs are deleted; set '
                                  'propagationPolicy=Background to remove them or set propagationPolicy=Orphan '
                                  'to suppress this warning"')
            log(f"job {ns}/{name} deleted without propagationPolicy (the real default orphans its pods; "
                f"the stand-in kills them anyway)")
        # A real server answers 202 only when orphanDependents=false was sent and the object stays.
        pending = 202 if opts.get("orphanDependents") is False else 200
        if "All" in (opts.get("dryRun") or []):
            return cur, 200, headers
        if meta.get("deletionTimestamp"):
            return cur, pending, headers
        if (policy == "Orphan" or (policy is None and opts.get("orphanDependents") is True)) and not is_job:
            await self.orphan_dependents(meta["uid"])
        new = copy.deepcopy(cur)
        finalizers = list(new["metadata"].get("finalizers") or [])
        if policy == "Foreground" and "foregroundDeletion" not in finalizers:
            finalizers.append("foregroundDeletion")
        if finalizers:
            new["metadata"]["finalizers"] = finalizers
            new["metadata"]["deletionTimestamp"] = now_rfc3339()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            if new["metadata"].get("generation"):
                new["metadata"]["generation"] += 1
            new["metadata"]["resourceVersion"] = self.next_rv()
            await self.store.write(res, ns, name, cur, new)
            self.publish(res, "MODIFIED", new, cur)
            if "foregroundDeletion" in finalizers and not is_job:  # Jobs: the job controller stand-in
                self.foreground[meta["uid"]] = (res, ns, name)
            return new, pending, headers
        gone = await self.remove_object(res, ns, name, cur)
        if res.plural == "pods":
            gone["metadata"]["deletionTimestamp"] = now_rfc3339()
            gone["metadata"]["deletionGracePeriodSeconds"] = 0
            return gone, 200, headers
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": details_for(res, name, uid=meta.get("uid"))}, 200, headers

    def gc_dependent_keys(self):
        return [k for k in GC_DEPENDENTS if k in self.resources] + list(self.crds)

    async def orphan_dependents(self, uid):
        """propagationPolicy=Orphan: the dependents lose their ownerReference to uid (done at once,
        where a real server adds the "orphan" finalizer and lets the garbage collector do it)."""
        for key in self.gc_dependent_keys() + [("", "v1", "pods")]:
            res, _ = self.resources[key]
            for o in await self.store.list(res, None):
                refs = o["metadata"].get("ownerReferences") or []
                if any(r.get("uid") == uid for r in refs):
                    new = copy.deepcopy(o)
                    new["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid]
                    normalize_meta(new["metadata"])
                    new["metadata"]["resourceVersion"] = self.next_rv()
                    await self.store.write(res, o["metadata"].get("namespace"), o["metadata"]["name"], o, new)
                    self.publish(res, "MODIFIED", new, o)

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
        if res_key(res) not in self.crds:
            for o in out:
                o.pop("kind", None)
                o.pop("apiVersion", None)
        return self.json_response({"kind": f"{info.kind}List", "apiVersion": self.api_version(res),
                                   "metadata": {"resourceVersion": str(self.rv)}, "items": out})

    # ---- garbage collector (STAND-IN)

    async def gc_loop(self):
        """Runs after writes (at most every 2 x --poll): dependents whose owners are all gone are
        deleted (Background); objects in foreground deletion lose their foregroundDeletion
        finalizer once their dependents are gone."""
        while True:
            await self.gc_wake.wait()
            self.gc_wake.clear()
            try:
                await self.gc_pass()
            except Exception as e:
                traceback.print_exc()
                log(f"garbage collector stand-in: pass failed: {e!r}")
            await asyncio.sleep(max(2 * self.args.poll, 0.1))

    def owner_key(self, ref):
        return self.kinds.get((ref.get("apiVersion"), ref.get("kind")))

    async def gc_pass(self):
        # Dependents are listed BEFORE the owners, so an owner created in between cannot look missing.
        deps = []
        for key in self.gc_dependent_keys():
            res, info = self.resources[key]
            deps += [(res, info, o) for o in await self.store.list(res, None)]
        owner_keys = {self.owner_key(r) for _, _, o in deps for r in o["metadata"].get("ownerReferences") or []}
        live = set()
        for key in owner_keys - {None}:
            res, _ = self.resources[key]
            live |= {o["metadata"].get("uid") for o in await self.store.list(res, None)}
        for res, info, o in deps:
            refs = o["metadata"].get("ownerReferences") or []
            if not refs or o["metadata"].get("deletionTimestamp"):
                continue
            if any(self.owner_key(r) is None for r in refs):
                continue  # an owner kind this server does not serve: left alone, as the real collector does
            if any(r.get("uid") in live for r in refs):
                continue
            await self.gc_delete(res, info, o, "Background", "all its owners are gone")
        for uid, (ores, ons, oname) in list(self.foreground.items()):
            cur = await self.store.get(ores, ons, oname)
            if cur is None or cur["metadata"].get("uid") != uid:
                self.foreground.pop(uid, None)
                continue
            waiting = [(res, info, o) for res, info, o in deps
                       if any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences") or [])]
            for res, info, o in waiting:
                if not o["metadata"].get("deletionTimestamp"):
                    await self.gc_delete(res, info, o, "Foreground", f"foreground deletion of its owner {oname}")
            if any(r.get("uid") == uid and r.get("blockOwnerDeletion")
                   for _, _, o in waiting for r in o["metadata"].get("ownerReferences") or []):
                continue  # next pass (the deletions above wake it)
            async with self.lock:
                cur = await self.store.get(ores, ons, oname)
                if cur is None or cur["metadata"].get("uid") != uid:
                    continue
                new = copy.deepcopy(cur)
                new["metadata"]["finalizers"] = [f for f in cur["metadata"].get("finalizers") or []
                                                 if f != "foregroundDeletion"]
                log(f"garbage collector: {qualified(ores)} {ons or ''}/{oname}: dependents gone, "
                    f"removing the foregroundDeletion finalizer")
                self.foreground.pop(uid, None)
                await self.commit_update({}, ores, self.resources[res_key(ores)][1], ons, oname, None, cur, new)

    async def gc_delete(self, res, info, o, policy, why):
        m = o["metadata"]
        ns = m.get("namespace")
        async with self.lock:
            cur = await self.store.get(res, ns, m["name"])
            if cur is None or cur["metadata"].get("uid") != m.get("uid") or cur["metadata"].get("deletionTimestamp"):
                return
            if policy == "Background":
                # A live check of every owner, as the real collector does before deleting.
                for r in cur["metadata"].get("ownerReferences") or []:
                    okey = self.owner_key(r)
                    if okey is None:
                        return
                    ores, oinfo = self.resources[okey]
                    owner = await self.store.get(ores, ns if oinfo.namespaced else None, r.get("name", ""))
                    if owner is not None and owner["metadata"].get("uid") == r.get("uid"):
                        return
            log(f"garbage collector: deleting {qualified(res)} {ns or ''}/{m['name']} ({why})")
            try:
                await self.delete_locked(res, info, ns, m["name"], {"propagationPolicy": policy})
            except ApiError as e:
                if e.code != 404:
                    log(f"garbage collector: {e.code} {e.message}")

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
        store = Store(str(backend.url), emulator)
        await store.start()
        front = Front(emulator, store, args)
        try:
            for path in args.crd:
                await front.install_crd_file(path)
        except SystemExit:
            await store.session.close()
            raise
        gc_task = asyncio.create_task(front.gc_loop())
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
        gc_task.cancel()
        front.closing = True
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
    ap.add_argument("--crd", action="append", default=[], metavar="FILE",
                    help="CustomResourceDefinition YAML (or JSON) file to serve (repeatable; several documents "
                         "per file are fine); installed before the stand-in says it is ready")
    args = ap.parse_args()
    args.state_dir = os.path.abspath(args.state_dir)
    os.makedirs(args.state_dir, exist_ok=True)
    args.kubeconfig = os.path.abspath(args.kubeconfig or os.path.join(args.state_dir, "kubeconfig"))
    args.token = args.token or None
    args.crd = [os.path.abspath(p) for p in args.crd]
    for p in args.crd:
        if not os.path.isfile(p):
            ap.error(f"--crd {p}: no such file")
    for kv in args.node_label:
        if "=" not in kv:
            ap.error(f"--node-label wants K=V, not {kv!r}")
    for q in (args.node_cpu, args.node_memory):
        quantity(q)
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
