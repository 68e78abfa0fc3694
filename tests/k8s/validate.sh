#!/usr/bin/env bash
# Offline checks of the Kubernetes manifests: yamllint on k8s/, k8s/base
# fresh from the chart, its manifests and the CRDs against the schemas of Kubernetes
# $K8S_VERSION (kubernetes-validate --strict), and the example custom
# resources against the generated CRD schemas (jsonschema). Tools from
# scripts/kube-tools.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV="${DIRAC_TEST_TOOLS:-$HOME/.cache/dirac-test-tools}/venv"
K8S_VERSION="${K8S_VERSION:-1.33}"
"$VENV/bin/yamllint" -d '{extends: relaxed, rules: {line-length: disable}}' k8s/
# k8s/base is the chart rendered by scripts/k8s-base.py: fresh?
"$VENV/bin/python" scripts/k8s-base.py --check
for f in k8s/base/dirac.yaml k8s/crds/*.yaml; do
  "$VENV/bin/kubernetes-validate" -k "$K8S_VERSION" --strict --quiet "$f"
done
kind_core="$(mktemp --suffix=.yaml)"
"$VENV/bin/python" - "$kind_core" <<'PY'
import glob, sys, yaml, jsonschema

def strip(schema):
    """The CRD schema as plain JSON Schema (x-kubernetes-* are extensions)."""
    if isinstance(schema, dict):
        out = {k: strip(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
        if out.get("nullable"):
            t = out.get("type")
            if isinstance(t, str):
                out["type"] = [t, "null"]
            out.pop("nullable")
        return out
    if isinstance(schema, list):
        return [strip(v) for v in schema]
    return schema

schemas = {}
for f in glob.glob("k8s/crds/*.yaml"):
    crd = yaml.safe_load(open(f))
    kind = crd["spec"]["names"]["kind"]
    schemas[kind] = strip(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
checked = 0
# The kind recipe's resources: custom resources here, the rest (its RBAC)
# to kubernetes-validate below.
core = []
for f in sorted(glob.glob("k8s/examples/*.yaml")) + ["k8s/base/agents.yaml", "tests/k8s/kind-resources.yaml"]:
    for doc in yaml.safe_load_all(open(f)):
        if not doc:
            continue
        kind = doc["kind"]
        if kind not in schemas and f.startswith("tests/"):
            core.append(doc)
            continue
        if kind not in schemas:
            sys.exit(f"{f}: no CRD for kind {kind}")
        try:
            jsonschema.validate(doc, schemas[kind])
        except jsonschema.ValidationError as e:
            sys.exit(f"{f}: {kind} {doc['metadata']['name']}: {e.message} at {list(e.absolute_path)}")
        checked += 1
print(f"{checked} example resources valid against their CRDs")
yaml.safe_dump_all(core, open(sys.argv[1], "w"))
PY
"$VENV/bin/kubernetes-validate" -k "$K8S_VERSION" --strict --quiet "$kind_core"
rm -f "$kind_core"
# The chart: helm lint, rendered with several value sets by the real Helm
# SDK, every manifest validated, custom resources against the CRDs, bad
# values refused by values.schema.json.
"$VENV/bin/yamllint" -d '{extends: relaxed, rules: {line-length: disable}}' charts/dirac/Chart.yaml charts/dirac/values.yaml .github/workflows/ tests/k8s/kind-resources.yaml
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
"$VENV/bin/python" tests/chart/render.py charts/dirac "$out"
for set in "$out"/*/; do
  if compgen -G "$set*.yaml" >/dev/null; then
    "$VENV/bin/kubernetes-validate" -k "$K8S_VERSION" --strict --quiet "$set"*.yaml
  fi
done
echo "k8s manifests and the chart valid for Kubernetes $K8S_VERSION"
