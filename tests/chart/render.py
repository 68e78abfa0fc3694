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

VALUE_SETS = {
    "defaults": {},
    "external-db": {
        "secrets": {"jobDB": "mysql://dirac:pw@mariadb.db:3306/jobdb",
                    "fileCatalogDB": "postgres://dirac@pg.db/fc"},
        "operator": {"replicas": 3},
        "agents": [{"name": "stalled", "kind": "StalledJobs", "interval": 300, "replicas": 2,
                    "settings": {"StalledTimeS": "4500"}}],
    },
    "existing-secret-no-operator": {
        "secrets": {"existingSecret": "dirac-prod"},
        "operator": {"enabled": False},
        "networkPolicy": {"enabled": False},
        "agents": [],
    },
}

BAD_VALUES = [
    ({"agents": [{"name": "x", "kind": "NoSuchAgent", "interval": 1}]}, "/agents/0/kind"),
    ({"agents": [{"name": "x", "kind": "StalledJobs"}]}, "/agents/0"),
    ({"operator": {"replicas": 0}}, "/operator/replicas"),
    ({"imagee": {}}, "imagee"),
]


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
                if doc["kind"] in crd_schemas:
                    try:
                        jsonschema.validate(doc, crd_schemas[doc["kind"]])
                    except jsonschema.ValidationError as e:
                        sys.exit(f"{set_name}: {path}: {e.message}")
                    continue
                fname = os.path.join(target, os.path.basename(path).replace(".yaml", f"-{i}.yaml"))
                with open(fname, "w") as f:
                    yaml.safe_dump(doc, f)
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
