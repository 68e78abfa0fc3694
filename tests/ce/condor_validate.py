#!/usr/bin/env python3
"""Validate HTCondor submit descriptions with HTCondor's own parser.

Usage: condor_validate.py [--procs] [--cluster N] [--lenient] FILE...

Each FILE is parsed with ``htcondor2.Submit`` (the PyPI ``htcondor`` bindings,
installed by scripts/condor-tools.sh), which runs HTCondor's C++ submit-language
reader. On top of what that reader rejects, this script applies the checks that
the real condor_submit makes only when it builds the job ClassAds (which the
bindings cannot do without a schedd), plus a few checks of our own that catch
generator bugs. See tests/ce/HTCONDOR.md for which check comes from where.

On success it prints one JSON document to stdout:
  {"files": [{"file": ..., "keys": {...}, "queue": "<queue args>",
              "procs": N, "custom_attributes": {...}, "warnings": [...],
              ["expanded": [{"Cluster": c, "Process": p, "item": {...},
                              "values": {key: expanded value}}, ...]]}]}
(``expanded`` only with --procs; --cluster sets $(Cluster), default 1) and
exits 0. On failure it prints "condor_validate: FILE: problem" lines to stderr
and exits 1. Exit 2: usage error or the bindings are missing.

--lenient turns our own checks (marked [ours] in messages) into warnings, so
that only what HTCondor itself would refuse is an error.
"""

import json
import multiprocessing
import os
import re
import sys
import tempfile

# ----------------------------------------------------------------------------
# Locate the bindings: re-exec under the test-tools venv if needed.


def _venv_python():
    explicit = os.environ.get("CONDOR_STANDIN_PYTHON")
    if explicit:
        return explicit
    tools = os.environ.get("DIRAC_TEST_TOOLS") or os.path.join(
        os.path.expanduser("~"), ".cache", "dirac-test-tools")
    return os.path.join(tools, "venv", "bin", "python")


def ensure_bindings():
    """Import htcondor2/classad2, re-executing under the venv python if the
    current interpreter lacks them. Returns (htcondor2, classad2)."""
    try:
        import classad2  # noqa: F401
        import htcondor2  # noqa: F401
        return htcondor2, classad2
    except ImportError:
        pass
    py = _venv_python()
    if os.path.exists(py) and not os.environ.get("_CONDOR_VALIDATE_REEXEC"):
        os.environ["_CONDOR_VALIDATE_REEXEC"] = "1"
        os.execv(py, [py] + sys.argv)
    sys.stderr.write(
        "condor_validate: the htcondor2 Python bindings are not installed "
        "(looked in %s); run scripts/condor-tools.sh\n" % py)
    sys.exit(2)


# ----------------------------------------------------------------------------
# Knowledge about the submit language that the bindings do not check.

# Submit commands HTCondor knows (from the SUBMIT_KEY_* names of HTCondor 25.x),
# lower-cased. A key outside this list that no other value references as
# $(key) is most likely a typo: real condor_submit silently treats it as a
# macro definition and ignores it.
KNOWN_COMMANDS = set("""
accounting_group accounting_group_user allow_arguments_v1 allow_environment_v1
allowed_execute_duration allowed_job_duration append_files arc_application
arc_data_staging arc_resources arc_rte arguments arguments2
aws_access_key_id_file aws_region aws_secret_access_key_file azure_admin_key
azure_admin_username azure_auth_file azure_image azure_location azure_size
batch_extra_submit_args batch_id batch_name batch_project batch_queue
batch_runtime buffer_block_size buffer_files buffer_size checkpoint_destination
checkpoint_exit_code cloud_label_names compress_files concurrency_limits
concurrency_limits_expr container_image container_is_common
container_service_names container_target_dir core_size cron_day_of_month
cron_day_of_week cron_hour cron_minute cron_month cron_prep_time cron_window
cuda_version dagman_job_id dagman_log deferral_prep_time deferral_time
deferral_window delegate_job_gsi_credentials_lifetime description disk_usage
docker_image docker_network_type docker_override_entrypoint docker_pull_policy
docker_send_credentials dont_encrypt_input_files dont_encrypt_output_files
email_attributes encrypt_execute_directory encrypt_input_files
encrypt_output_files env environment environment2
erase_output_and_error_on_restart error executable exit_requirements
fetch_files file_remaps get_env getenv gpus_maximum_capability
gpus_minimum_capability gpus_minimum_memory gpus_minimum_runtime grid_resource
hold hold_kill_sig image_size initial_dir initialdir input
interactive_args interactive_executable jar_files java_vm_args
java_vm_arguments java_vm_arguments2 job_ad_information_attrs job_iwd
job_lease_duration job_machine_attrs job_machine_attrs_history_length
job_max_vacate_time jobset keep_claim_idle kill_sig kill_sig_timeout
leave_in_queue load_profile local_files log log_xml machine_count manifest
manifest_dir match_list_length materialize_max_idle max_idle
max_job_retirement_time max_materialize max_retries max_transfer_input_mb
max_transfer_output_mb memory_usage mount_under_scratch next_job_start_delay
nice_user node_count noop_job noop_job_exit_code noop_job_exit_signal
notification notify_user on_evict_checks on_exit_hold on_exit_hold_reason
on_exit_hold_subcode on_exit_remove output output_destination
output_directory parallel_script_shadow parallel_script_starter periodic_hold
periodic_hold_reason periodic_hold_subcode periodic_release periodic_remove
periodic_vacate preferences preserve_relative_paths primary_unix_group prio
priority project_name rank remote_initialdir remove_kill_sig rendezvousdir
request_cpus request_disk request_gpus request_memory require_gpus
requirements retry_request_disk retry_request_memory
retry_request_memory_increase retry_request_memory_max retry_until
run_as_owner s3_access_key_id_file s3_secret_access_key_file scitokens_file
send_credential shell should_transfer_files skip_filechecks skip_if_dataflow
stack_size starter_debug starter_log stderr stdin stdout stream_error
stream_input stream_output submit_event_notes submit_event_notes_attrs
submit_event_user_notes success_exit_code suspend_job_at_exec
tool_daemon_args tool_daemon_arguments tool_daemon_arguments2 tool_daemon_cmd
tool_daemon_error tool_daemon_input tool_daemon_output
transfer_checkpoint_files transfer_common_input transfer_container
transfer_error transfer_executable transfer_input transfer_input_files
transfer_output transfer_output_files transfer_output_remaps transfer_plugins
ulog_execute_attrs universe use_oauth_services use_scitoken use_scitokens
use_x509userproxy vm_checkpoint vm_disk vm_macaddr vm_memory vm_networking
vm_networking_type vm_no_output_vm vm_type vm_vcpus vm_vnc want_ads
want_graceful_removal want_io_proxy want_job_networking
when_to_transfer_output x509userproxy xen_initrd xen_kernel
xen_kernel_params xen_root
shouldtransferfiles whentotransferoutput transferinputfiles
transferoutputfiles useoauthservices wantnametag requestcpus requestmemory
requestdisk
""".split())
KNOWN_PREFIXES = ("request_", "require_", "ec2_tag_", "ec2_parameter_",
                  "cloud_label_", "transform_body_", "remote_", "my.")

# Built-in macros condor_submit defines itself.
BUILTIN_MACROS = {m.lower() for m in (
    "Cluster", "ClusterId", "Process", "ProcId", "Step", "ItemIndex", "Row",
    "Node", "Item", "SUBMIT_FILE", "SUBMIT_TIME", "YEAR", "MONTH", "DAY",
    "DOLLAR", "IsLinux", "IsWindows", "IsMacOS", "FULL_HOSTNAME", "HOSTNAME",
    "IP_ADDRESS", "TILDE", "USERNAME", "OPSYS", "ARCH", "OPSYSANDVER")}

# Submit commands whose value is a ClassAd expression.
EXPRESSION_COMMANDS = {
    "requirements", "rank", "periodic_remove", "periodic_hold",
    "periodic_release", "periodic_vacate", "on_exit_remove", "on_exit_hold",
    "leave_in_queue", "exit_requirements", "success_exit_code"}

UNIVERSES = {"vanilla", "grid", "scheduler", "local", "docker", "container",
             "java", "parallel", "vm", "standard"}
SHOULD_TRANSFER = {"YES", "NO", "IF_NEEDED"}
WHEN_TO_TRANSFER = {"ON_EXIT", "ON_EXIT_OR_EVICT", "ON_SUCCESS"}
BOOL_TRUE = {"true", "t", "yes", "y", "1"}
BOOL_FALSE = {"false", "f", "no", "n", "0"}
SIGNALS = {"SIGHUP", "SIGINT", "SIGQUIT", "SIGILL", "SIGTRAP", "SIGABRT",
           "SIGBUS", "SIGFPE", "SIGKILL", "SIGUSR1", "SIGSEGV", "SIGUSR2",
           "SIGPIPE", "SIGALRM", "SIGTERM", "SIGCHLD", "SIGCONT", "SIGSTOP",
           "SIGTSTP", "SIGTTIN", "SIGTTOU"}
REQUIRED = ("executable", "universe", "output", "error", "log")

FUNC_MACRO = re.compile(r"\$[A-Za-z_]+\(")
MACRO_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.]*)(:[^)]*)?\)")
QUEUE_LINE = re.compile(r"^\s*queue(\s|$)", re.IGNORECASE)


class Problems:
    def __init__(self, lenient):
        self.errors = []
        self.warnings = []
        self.lenient = lenient

    def real(self, msg):
        """Something HTCondor itself (parser or condor_submit) refuses."""
        self.errors.append(msg)

    def ours(self, msg):
        """One of our own checks: an error unless --lenient."""
        msg = "[ours] " + msg
        (self.warnings if self.lenient else self.errors).append(msg)


def logical_lines(text):
    """Yield (line number, logical line) with backslash continuations joined
    and full-line comments dropped, as the submit reader sees them."""
    buf, start = "", None
    for n, raw in enumerate(text.splitlines(), 1):
        if start is None:
            start = n
        stripped = raw.rstrip()
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += raw
        line, buf, first = buf, "", start
        start = None
        if line.strip().startswith("#"):
            continue
        yield first, line
    if buf:
        yield start, buf


def scan_queue_statements(text, pb):
    """The bindings do not tell a missing queue statement from a bare
    `queue`, and they silently drop everything after the first one. Find the
    queue statements ourselves."""
    queues, after = [], []
    in_items = False
    for n, line in logical_lines(text):
        s = line.strip()
        if not s:
            continue
        if in_items:
            if s.startswith(")"):
                in_items = False
            continue
        if QUEUE_LINE.match(s):
            queues.append((n, s))
            if s.endswith("(") or re.search(r"\(\s*$", s):
                in_items = True
            continue
        if queues:
            after.append((n, s))
    if not queues:
        pb.real('no "queue" statement (condor_submit: "doesn\'t contain any '
                '"queue" commands -- no jobs queued")')
    elif len(queues) > 1:
        pb.ours("%d queue statements (lines %s): htcondor2.Submit reads only "
                "up to the first; generate a single trailing queue statement"
                % (len(queues), ", ".join(str(q[0]) for q in queues)))
    if queues and after:
        pb.ours("statements after the queue statement (line %d: %r) are "
                "ignored by htcondor2.Submit" % after[0])
    return queues


def lookup(keys, *names):
    """Case-insensitive lookup of the first present submit key."""
    low = {k.lower(): k for k in keys}
    for name in names:
        k = low.get(name.lower())
        if k is not None:
            return k
    return None


def parse_bool(v):
    v = v.strip().lower()
    if v in BOOL_TRUE:
        return True
    if v in BOOL_FALSE:
        return False
    return None


def split_queue_args(qargs):
    """Split the queue arguments into (count expression, variables, mode).
    mode is None, 'in', 'from' or 'matching'."""
    q = qargs.strip()
    m = re.search(r"(^|\s)(in|from|matching)(\s|\(|$)", q, re.IGNORECASE)
    if not m:
        return (q or "1"), [], None
    head = q[:m.start(2)].strip()
    mode = m.group(2).lower()
    toks = head.replace(",", " , ").split()
    count = "1"
    if toks and (re.fullmatch(r"\d+", toks[0]) or toks[0].startswith("$")):
        # "queue 3 stamp in ..." has a count before the variable names
        if len(toks) > 1 or mode is None:
            count, toks = toks[0], toks[1:]
    names = [t for t in " ".join(toks).replace(",", " ").split()]
    return count, (names or ["Item"]), mode


def check_new_syntax(value, what, pb):
    """Arguments/environment in the 'new' syntax: surrounded by double quotes,
    whitespace-separated, single quotes group words, '' and \"\" escape."""
    v = value.strip()
    if not v.startswith('"'):
        return
    if len(v) < 2 or not v.endswith('"'):
        pb.real("%s: value starts with a double quote but does not end with "
                "one (new syntax): %s" % (what, value))
        return
    inner = v[1:-1]
    i, in_sq = 0, False
    while i < len(inner):
        c = inner[i]
        if c == '"':
            if inner[i + 1:i + 2] == '"':
                i += 2
                continue
            pb.real('%s: unescaped double quote inside the new-syntax value '
                    '(write "" for a literal one): %s' % (what, value))
            return
        if c == "'":
            if in_sq and inner[i + 1:i + 2] == "'":
                i += 2
                continue
            in_sq = not in_sq
        i += 1
    if in_sq:
        pb.real("%s: unbalanced single quote in the new-syntax value: %s"
                % (what, value))


def check_size(value, what, pb, unit_ok=True):
    v = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?\s*([KMGTP]B?)?", v, re.IGNORECASE):
        return
    pb.real("%s: not a number with an optional K/M/G/T unit: %r" % (what, value))


def validate_one(path, want_procs, cluster, lenient):
    """Runs in a child process (the bindings can hang on self-referencing
    macros). Returns a dict with errors/warnings and the summary."""
    htcondor2, classad2 = ensure_bindings()
    pb = Problems(lenient)
    out = {"file": path}
    try:
        with open(path, "r", encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        pb.real("cannot read: %s" % e)
        return {"file": path, "errors": pb.errors, "warnings": pb.warnings}

    scan_queue_statements(text, pb)

    # The C++ reader prints the reason for a rejection on fd 2; capture it.
    cap = tempfile.TemporaryFile()
    saved = os.dup(2)
    os.dup2(cap.fileno(), 2)
    try:
        try:
            sub = htcondor2.Submit(text)
            err = None
        except Exception as e:  # the bindings raise ValueError
            sub, err = None, e
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    cap.seek(0)
    detail = cap.read().decode("utf-8", "replace").strip()
    detail = re.sub(r"^\d\d/\d\d/\d\d \d\d:\d\d:\d\d ", "", detail, flags=re.M)
    if sub is None:
        pb.real("htcondor2.Submit rejected the description: %s%s"
                % (err, (" (" + detail + ")") if detail else ""))
        return {"file": path, "errors": pb.errors, "warnings": pb.warnings}
    if detail:
        pb.warnings.append("submit reader said: " + detail)

    keys = dict(sub)
    out["keys"] = keys
    qargs = sub.getQArgs()
    out["queue"] = qargs

    # Queue arguments: itemdata() is where the bindings validate them.
    try:
        it = sub.itemdata()
        items = None if it is None else list(it)
    except Exception as e:
        pb.real("queue statement %r rejected: %s" % (qargs, e))
        return {"file": path, "errors": pb.errors, "warnings": pb.warnings}
    count_expr, varnames, mode = split_queue_args(qargs)
    probe = htcondor2.Submit(text)

    def expand_text(s):
        probe["__condor_validate_probe"] = s
        return probe.expand("__condor_validate_probe")

    try:
        count_txt = expand_text(count_expr).strip()
        count = int(count_txt)
    except Exception:
        try:
            count = int(classad2.ExprTree(count_txt).eval())
        except Exception:
            pb.real("queue count %r is not an integer" % count_expr)
            count = 1
    if count < 0:
        pb.real("queue count %d is negative" % count)
    if mode is not None and items is None:
        items = []
    if items is not None:
        items = [it if isinstance(it, dict) else {varnames[0]: it} for it in items]
    nitems = 1 if items is None else len(items)
    nprocs = count * nitems
    out["procs"] = nprocs
    if nprocs == 0:
        pb.ours("the queue statement %r produces no jobs (condor_submit -terse "
                "would print nothing)" % qargs)

    item_vars = {v.lower() for v in varnames} if mode else set()
    low_keys = {k.lower(): k for k in keys}

    # Our check: macros referenced but defined nowhere expand to "" silently.
    referenced = set()
    for k, v in keys.items():
        for m in MACRO_REF.finditer(v):
            name, default = m.group(1), m.group(2)
            referenced.add(name.lower())
            if default is not None:
                continue
            ln = name.lower()
            if ln in low_keys or ln in item_vars or ln in BUILTIN_MACROS:
                continue
            try:
                val = expand_text("$(%s)" % name)
            except Exception:
                val = ""
            if val == "":
                pb.ours("%s references $(%s), which is defined nowhere "
                        "(it would expand to an empty string)" % (k, name))

    # Our check: unknown commands that are not used as macros. A nested
    # reference such as $(STAMP_$(Process)) counts for every STAMP_* key.
    nested = tuple(m.group(1).lower() for v in keys.values()
                   for m in re.finditer(r"\$\(([A-Za-z_][A-Za-z0-9_.]*)\$\(", v))
    for k in keys:
        lk = k.lower()
        if lk in KNOWN_COMMANDS or lk.startswith(KNOWN_PREFIXES):
            continue
        if lk in referenced or (nested and lk.startswith(nested)):
            continue
        pb.ours("unknown submit command %r (condor_submit would accept it "
                "silently as a macro definition and ignore it)" % k)

    # Required keys (ours: what our CE connector must always set).
    for r in REQUIRED:
        k = lookup(keys, r, {"output": "stdout", "error": "stderr"}.get(r, r))
        if k is None or not keys[k].strip():
            pb.ours("required command %r is missing or empty" % r)

    uk = lookup(keys, "universe")
    universe = keys[uk].strip().lower() if uk else "vanilla"
    if universe not in UNIVERSES:
        pb.real("universe %r is not a known universe" % keys[uk])
    if universe == "grid" and not lookup(keys, "grid_resource"):
        pb.real("grid universe without grid_resource")

    # File transfer rules condor_submit applies when making the job ad.
    sk = lookup(keys, "should_transfer_files", "ShouldTransferFiles")
    wk = lookup(keys, "when_to_transfer_output", "WhenToTransferOutput")
    should = keys[sk].strip().upper() if sk else None
    when = keys[wk].strip().upper() if wk else None
    if should is not None and should not in SHOULD_TRANSFER:
        pb.real("invalid value (%s) for ShouldTransferFiles; specify YES, NO "
                "or IF_NEEDED" % keys[sk])
    if when is not None and when not in WHEN_TO_TRANSFER:
        pb.real("invalid value (%s) for WhenToTransferOutput; specify ON_EXIT "
                "or ON_EXIT_OR_EVICT" % keys[wk])
    eff_should = should or ("YES" if when == "ON_EXIT_OR_EVICT" else "IF_NEEDED")
    in_files = lookup(keys, "transfer_input_files", "TransferInputFiles")
    out_files = lookup(keys, "transfer_output_files", "TransferOutputFiles")
    if eff_should == "NO" and (in_files or out_files):
        pb.real("files to transfer are listed but should_transfer_files = NO")
    if eff_should == "NO" and when not in (None,):
        pb.real("when_to_transfer_output = %s contradicts should_transfer_files "
                "= NO" % when)
    if eff_should == "IF_NEEDED" and when == "ON_EXIT_OR_EVICT":
        pb.real('"when_to_transfer_output = ON_EXIT_OR_EVICT" and '
                '"should_transfer_files = IF_NEEDED" are incompatible')

    for name in ("use_x509userproxy", "getenv", "transfer_executable",
                 "stream_output", "stream_error"):
        k = lookup(keys, name)
        if k and parse_bool(keys[k]) is None and not (name == "getenv"):
            pb.real("%s = %r is not a boolean" % (k, keys[k]))
    k = lookup(keys, "use_scitokens", "use_scitoken")
    if k:
        v = keys[k].strip().lower()
        if v != "auto" and parse_bool(v) is None:
            pb.real("use_scitokens error. Value should be true, false, or auto.")
        elif parse_bool(v) and not lookup(keys, "scitokens_file") \
                and not os.environ.get("BEARER_TOKEN_FILE"):
            pb.real("No Scitokens filename specified. Expected either "
                    "scitokens_file command or the BEARER_TOKEN_FILE "
                    "environment variable to be set.")
    k = lookup(keys, "kill_sig")
    if k:
        v = keys[k].strip().upper()
        if not (v.isdigit() or v in SIGNALS or ("SIG" + v) in SIGNALS):
            pb.real("kill_sig %r is not a signal name or number" % keys[k])

    # Per-proc expansion: every key must expand, and the values that
    # condor_submit parses must parse.
    procs = []
    step_items = items if items is not None else [None]
    proc = 0
    for ix, item in enumerate(step_items):
        for step in range(count):
            setv = {"Cluster": str(cluster), "ClusterId": str(cluster),
                    "Process": str(proc), "ProcId": str(proc),
                    "Step": str(step), "ItemIndex": str(ix), "Row": str(ix)}
            if item:
                setv.update(item)
            for kk, vv in setv.items():
                probe[kk] = vv
            values = {}
            for key in keys:
                try:
                    values[key] = probe.expand(key)
                except KeyError:
                    # The bindings raise KeyError when a value expands to the
                    # empty string. That is fine for plain macros (our
                    # undefined-macro check covers those), but a $INT(),
                    # $REAL(), ... function macro that yields nothing failed.
                    values[key] = ""
                    if FUNC_MACRO.search(keys[key]):
                        pb.real("%s: macro function in %r could not be "
                                "evaluated (proc %d)" % (key, keys[key], proc))
                except Exception as e:
                    pb.real("cannot expand %s for proc %d: %r" % (key, proc, e))
                    continue
            for key, val in values.items():
                if proc == 0 and re.search(r"\s#", keys[key]):
                    pb.ours("%s = %r: the submit language has no inline "
                            "comments, the '#...' text is part of the value"
                            % (key, keys[key]))
                if re.search(r"(?<!\$)\$\(", val):
                    pb.real("%s: unterminated or invalid macro in %r (proc %d)"
                            % (key, val, proc))
            for key, val in values.items():
                lk = key.lower()
                if lk.startswith("my.") or lk in EXPRESSION_COMMANDS:
                    try:
                        classad2.ExprTree(val)
                    except Exception:
                        pb.real("%s = %r is not a valid ClassAd expression "
                                "(proc %d)" % (key, val, proc))
            for name, what in (("request_cpus", "cpus"),
                               ("request_memory", "memory"),
                               ("request_disk", "disk")):
                kk = lookup(values, name)
                if kk:
                    v = values[kk]
                    if name == "request_cpus":
                        if not re.fullmatch(r"\s*\d+\s*", v):
                            try:
                                classad2.ExprTree(v)
                                pb.ours("request_cpus = %r is not an integer "
                                        "(condor_submit would store it as an "
                                        "expression)" % v)
                            except Exception:
                                pb.real("request_cpus %r is not an integer "
                                        "or expression" % v)
                    else:
                        if not re.fullmatch(r"\s*\d+(\.\d+)?\s*([KMGTP]B?)?\s*",
                                            v, re.IGNORECASE):
                            try:
                                classad2.ExprTree(v)
                                pb.ours("%s = %r is not a number with an "
                                        "optional K/M/G/T unit (condor_submit "
                                        "would store it as an expression)"
                                        % (name, v))
                            except Exception:
                                check_size(v, name, pb)
            for name in ("arguments", "environment"):
                kk = lookup(values, name)
                if kk:
                    check_new_syntax(values[kk], kk, pb)
            if want_procs:
                procs.append({"Cluster": cluster, "Process": proc,
                              "Step": step, "ItemIndex": ix,
                              "item": item or {}, "values": values})
            proc += 1
            if len(pb.errors) > 20:
                break
    if want_procs:
        out["expanded"] = procs
    out["custom_attributes"] = {k[3:]: v for k, v in keys.items()
                                if k.lower().startswith("my.")}
    out["universe"] = universe
    out["errors"] = pb.errors
    out["warnings"] = pb.warnings
    return out


def _child(conn, path, want_procs, cluster, lenient):
    try:
        conn.send(validate_one(path, want_procs, cluster, lenient))
    except Exception as e:  # report, never hang the parent
        conn.send({"file": path, "errors": ["internal error: %r" % e],
                   "warnings": []})
    conn.close()


def validate(path, want_procs=False, cluster=1, lenient=False, timeout=None):
    """Validate one file in a forked child with a timeout."""
    if timeout is None:
        timeout = float(os.environ.get("CONDOR_VALIDATE_TIMEOUT", "10"))
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_child, args=(child, path, want_procs, cluster, lenient))
    p.start()
    child.close()
    res = None
    if parent.poll(timeout):
        try:
            res = parent.recv()
        except EOFError:
            res = None
    if res is None:
        p.kill()
        p.join()
        return {"file": path, "warnings": [], "errors": [
            "parsing or macro expansion did not finish within %gs (htcondor2 "
            "loops forever on self-referencing macros such as A = $(B), "
            "B = $(A))" % timeout]}
    p.join()
    return res


def main(argv):
    want_procs, lenient, cluster, files = False, False, 1, []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--procs":
            want_procs = True
        elif a == "--lenient":
            lenient = True
        elif a == "--cluster":
            i += 1
            cluster = int(argv[i])
        elif a in ("-h", "--help"):
            sys.stdout.write(__doc__)
            return 0
        elif a.startswith("--"):
            sys.stderr.write("condor_validate: unknown option %s\n" % a)
            return 2
        else:
            files.append(a)
        i += 1
    if not files:
        sys.stderr.write("usage: condor_validate.py [--procs] [--cluster N] "
                         "[--lenient] FILE...\n")
        return 2
    ensure_bindings()
    results, failed = [], False
    for f in files:
        r = validate(f, want_procs, cluster, lenient)
        for e in r["errors"]:
            sys.stderr.write("condor_validate: %s: %s\n" % (f, e))
        failed = failed or bool(r["errors"])
        results.append(r)
    if failed:
        return 1
    for r in results:
        r.pop("errors", None)
    json.dump({"files": results}, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
