"""Render charts/dirac with the real Helm SDK (PyPI helm-python-sdk) for
several value sets, lint it, and write each rendering's manifests to
OUT/<set>/ for kubernetes-validate; custom resources are checked against
the chart's CRD schemas. Exit 1 with a message on any problem.

Usage: render.py CHART OUT
"""

import json
import os
import sys

import helm_python as helm
import jsonschema
import yaml

DB = {"jobDB": "mysql://dirac:pw@mariadb.db:3306/jobdb"}
# What every installation must say: where envoy is reachable.
CONFIG = {"Services": {"PublicURL": "https://dirac.example.org:8443",
                       "Auth": {"PublicURL": "https://dirac.example.org:8443"}}}

VALUE_SETS = {
    "defaults": {"secrets": DB, "config": CONFIG},
    "external-db": {
        "config": CONFIG,
        "secrets": {"jobDB": "mysql://dirac:pw@mariadb.db:3306/jobdb",
                    "fileCatalogDB": "postgres://dirac@pg.db/fc"},
        "operator": {"replicas": 3},
        "agents": [{"name": "stalled", "kind": "StalledJobs", "interval": 300, "replicas": 2,
                    "settings": {"StalledTimeS": "4500"}}],
        "services": {"wms": {"autoscaling": {"enabled": False}, "replicas": 3}},
        "siteDirectors": [{"name": "dteam-wlcg", "spec": {"vo": "dteam", "interval": 120,
                                                        "ceSelector": {"matchLabels": {"grid": "wlcg"}}}}],
    },
    "existing-secret-no-operator": {
        "config": CONFIG,
        "secrets": {"existingSecret": "dirac-prod"},
        "keys": {"existingSecret": "dirac-prod-keys"},
        "operator": {"enabled": False},
        "networkPolicy": {"enabled": False},
        "sandboxes": {"volume": {"enabled": False}},
        "envoy": {"tls": {"enabled": False}, "service": {"type": "ClusterIP"}},
        "agents": [],
    },
    "cert-manager-monitoring": {
        "secrets": DB,
        "config": CONFIG,
        "sandboxes": {"volume": {"existingClaim": "shared-sandboxes"}},
        "envoy": {"tls": {"certManager": {"enabled": True,
                                          "issuerRef": {"name": "letsencrypt"},
                                          "dnsNames": ["dirac.example.org"]}},
                  "corsAllowOrigins": ["https://notebooks.example.org"],
                  "autoscaling": {"enabled": True}},
        "tracing": {"otlpEndpoint": "http://otel-collector.monitoring:4317"},
        "monitoring": {"serviceMonitors": {"enabled": True, "labels": {"release": "prom"}},
                       "dashboards": {"enabled": True}},
    },
}

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "k8s"))
import kind_values  # noqa: E402  (the kind recipe's values, validated here)

VALUE_SETS["kind-e2e"] = kind_values.values("http://dirac-dirac-envoy.dirac.svc.cluster.local:8443", "e2e")

BAD_VALUES = [
    ({"agents": [{"name": "x", "kind": "NoSuchAgent", "interval": 1}]}, "/agents/0/kind"),
    ({"agents": [{"name": "x", "kind": "StalledJobs"}]}, "/agents/0"),
    ({"operator": {"replicas": 0}}, "/operator/replicas"),
    ({"imagee": {}}, "imagee"),
    ({"config": CONFIG}, "secrets.jobDB"),
    ({"secrets": DB}, "config.Services.Auth.PublicURL"),
    ({"secrets": DB, "envoy": {"service": {"type": "Ingress"}}}, "/envoy/service/type"),
    ({"secrets": DB, "config": CONFIG, "envoy": {"tls": {"certManager": {"enabled": True}}}}, "issuerRef.name"),
    ({"secrets": DB, "config": CONFIG,
      "envoy": {"tls": {"certManager": {"enabled": True, "issuerRef": {"name": "le"}}}}}, "dnsNames"),
    ({"secrets": DB, "services": {"wms": {"replicas": 0}}}, "/services/wms/replicas"),
    ({"secrets": DB, "tracing": {"otlpEndpoint": "collector:4317"}}, "/tracing/otlpEndpoint"),
    ({"secrets": DB, "siteDirectors": [{"name": "x"}]}, "/siteDirectors/0"),
]

# Kinds of other operators' CRDs (Prometheus Operator, cert-manager):
# kubernetes-validate has no schema for them; the fields their controllers
# need are checked here.
FOREIGN = {
    "ServiceMonitor": ["spec.selector.matchLabels", "spec.endpoints"],
    "PodMonitor": ["spec.selector.matchLabels", "spec.podMetricsEndpoints"],
    "Certificate": ["spec.secretName", "spec.issuerRef.name", "spec.dnsNames"],
}


# What some renderings must hold at least (kind: count).
EXPECTED = {
    # wms, dms, rms, auth, envoy, operator; HPAs of wms and dms; a PDB each
    # for the services and envoy; the keys and database Secrets; the
    # sandboxes.
    "defaults": {"Deployment": 6, "Service": 6, "HorizontalPodAutoscaler": 2,
                 "PodDisruptionBudget": 5, "Secret": 2, "PersistentVolumeClaim": 1,
                 "NetworkPolicy": 6, "Agent": 4},
    "existing-secret-no-operator": {"Deployment": 5},
    "external-db": {"SiteDirector": 1, "Agent": 1},
    "cert-manager-monitoring": {"Certificate": 1, "ServiceMonitor": 1, "PodMonitor": 1,
                                "HorizontalPodAutoscaler": 3},
}


def field(doc, path):
    for part in path.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return None
        doc = doc[part]
    return doc


def strip(schema):
    if isinstance(schema, dict):
        out = {k: strip(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
        if out.pop("nullable", False) and isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        return out
    if isinstance(schema, list):
        return [strip(v) for v in schema]
    return schema


def main() -> None:
    chart_dir, out = sys.argv[1], sys.argv[2]
    lint = helm.lint(chart_dir)
    if lint.get("errors"):
        sys.exit(f"helm lint: {lint['errors']}")
    chart = helm.Chart.load(chart_dir)
    crd_schemas = {}
    for name in os.listdir(os.path.join(chart_dir, "crds")):
        crd = yaml.safe_load(open(os.path.join(chart_dir, "crds", name)))
        crd_schemas[crd["spec"]["names"]["kind"]] = strip(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    for set_name, values in VALUE_SETS.items():
        rendered = chart.render(values, name="dirac", namespace="dirac")
        target = os.path.join(out, set_name)
        os.makedirs(target, exist_ok=True)
        kinds = []
        for path, text in rendered.items():
            if path.endswith("NOTES.txt"):
                continue
            for i, doc in enumerate(d for d in yaml.safe_load_all(text) if d):
                kinds.append(doc["kind"])
                if doc["kind"] in FOREIGN:
                    for path_ in FOREIGN[doc["kind"]]:
                        if not field(doc, path_):
                            sys.exit(f"{set_name}: {path}: {doc['kind']} lacks {path_}")
                    continue
                if doc["kind"] == "ConfigMap" and doc["metadata"]["name"].endswith("-dashboards"):
                    for key, text_ in doc["data"].items():
                        dash = json.loads(text_)
                        if not dash.get("panels"):
                            sys.exit(f"{set_name}: dashboard {key} has no panels")
                if doc["kind"] in crd_schemas:
                    try:
                        jsonschema.validate(doc, crd_schemas[doc["kind"]])
                    except jsonschema.ValidationError as e:
                        sys.exit(f"{set_name}: {path}: {e.message}")
                    continue
                fname = os.path.join(target, os.path.basename(path).replace(".yaml", f"-{i}.yaml"))
                with open(fname, "w") as f:
                    yaml.safe_dump(doc, f)
        for kind, least in EXPECTED.get(set_name, {}).items():
            if kinds.count(kind) < least:
                sys.exit(f"{set_name}: {kinds.count(kind)} {kind} rendered, expected at least {least}")
        if set_name == "existing-secret-no-operator" and "Secret" in kinds:
            sys.exit(f"{set_name}: a Secret was rendered though both are existing ones")
        print(json.dumps({"set": set_name, "kinds": sorted(kinds)}))
    for values, word in BAD_VALUES:
        try:
            chart.render(values, name="dirac", namespace="dirac")
        except helm.HelmError as e:
            if word not in str(e):
                sys.exit(f"bad values {values} refused, but the message does not name {word!r}: {e}")
            continue
        sys.exit(f"bad values {values} were accepted")
    print(json.dumps({"bad_values_refused": len(BAD_VALUES)}))


if __name__ == "__main__":
    main()
