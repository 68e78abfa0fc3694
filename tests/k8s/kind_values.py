"""The chart values of the kind recipe (scripts/kind-e2e.sh), in one place
so tests/chart/render.py renders and validates exactly what the recipe
installs.

Usage: kind_values.py OUT ENVOY_URL TAG   (run from the repository root)
"""

import sys

import yaml


def values(envoy_url: str, tag: str) -> dict:
    # The VO registry of the embedded installation (alice, pilot, ...) and
    # the URLs pilots use: envoy inside the cluster, plain HTTP/2 (TLS off so
    # that pilot pods need no CA; production keeps envoy.tls on).
    registry = yaml.safe_load(open("examples/dirac.yaml"))["Registry"]
    return {
        "image": {"registry": "dirac-rs", "tag": tag, "pullPolicy": "Never"},
        "secrets": {"jobDB": "mysql://root:e2e@mariadb:3306/dirac"},
        "config": {
            "Registry": registry,
            "Services": {
                "PublicURL": envoy_url,
                "Auth": {"PublicURL": envoy_url, "DevLogin": False},
                "SiteDirector": {"PilotOptions": ["--max-cycles", "3",
                                                  "--stop-after-failed-matches", "3",
                                                  "--polling-time", "5"]},
            },
        },
        "services": {s: {"replicas": 1, "autoscaling": {"enabled": False}}
                     for s in ("wms", "dms", "rms", "auth")},
        "sandboxes": {"volume": {"accessModes": ["ReadWriteOnce"], "size": "1Gi"}},
        "envoy": {"replicas": 1, "tls": {"enabled": False}, "service": {"type": "ClusterIP"}},
        # tests/k8s/kind-resources.yaml makes it: it may run pilots as Jobs.
        "operator": {"replicas": 1, "workloadServiceAccount": "dirac-site-director"},
    }


if __name__ == "__main__":
    with open(sys.argv[1], "w") as f:
        yaml.safe_dump(values(sys.argv[2], sys.argv[3]), f)
