"""Deployment artefacts against the real server, so they cannot drift from it:
- `kubectl kustomize` renders deploy/kubernetes/base and overlays/gpu; yamllint passes on deploy/;
  promtool accepts the scrape config and the recording rules;
- every BMSERVE_* variable in the Deployment and the Dockerfile is a flag of `bmserve serve --help`;
  container ports, probes, Service, ServiceMonitor, PDB and HPA agree with each other and with
  the server's flags; terminationGracePeriodSeconds covers preStop + --drain-timeout;
- probe paths and /metrics answer on a live `bmserve serve --demo`; every bmserve: metric the HPA,
  prometheus-adapter rule, recording rules and Grafana dashboard use exists in its /metrics.

usage: e2e_deploy_test.py BMSERVE_BINARY REPO_ROOT
"""
import json
import os
import re
import shutil
import subprocess
import sys

import yaml

import harness
from harness import check, fail


def run(cmd, cwd=None):
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=cwd)
    return out.returncode, out.stdout + out.stderr


def render(root, path):
    rc, out = run(["kubectl", "kustomize", os.path.join(root, path)])
    check(rc == 0, "kubectl kustomize %s failed:\n%s" % (path, out))
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs, kind):
    found = [d for d in docs if d.get("kind") == kind]
    check(len(found) == 1, "expected one %s, found %d" % (kind, len(found)))
    return found[0]


def metric_refs(text):
    """bmserve: metric names used in PromQL text (recording-rule outputs, with a second ':',
    are not metric references)."""
    return set(re.findall(r"bmserve:[A-Za-z0-9_]+(?![A-Za-z0-9_:])", text))


def family_of(name, families):
    if name in families:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and families.get(name[: -len(suffix)]) == "histogram":
            return name[: -len(suffix)]
    return None


def check_container(dep, flags, label):
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    envs = {f["env"]: name for name, f in flags.items() if f["env"]}
    for name in env:
        check(name in envs, "%s: env %s is not a flag of `bmserve serve --help`" % (label, name))

    def setting(flag):
        return env.get(flags[flag]["env"], flags[flag]["default"])

    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    check(ports.get("http") == int(setting("http-port")),
          "%s: containerPort http %s != --http-port %s" % (label, ports.get("http"),
                                                          setting("http-port")))
    if "grpc-port" in flags:
        check(ports.get("grpc") == int(setting("grpc-port")),
              "%s: containerPort grpc %s != --grpc-port %s" % (label, ports.get("grpc"),
                                                              setting("grpc-port")))
    check(setting("host") == "0.0.0.0", "%s: the pod must listen on 0.0.0.0" % label)
    probes = {k: c.get(k) for k in ("startupProbe", "readinessProbe", "livenessProbe")}
    for k, p in probes.items():
        check(p is not None, "%s: %s missing" % (label, k))
        check(p["httpGet"]["port"] in ("http", ports.get("http")),
              "%s: %s not on the http port" % (label, k))
    check(probes["readinessProbe"]["httpGet"]["path"] == "/ready", "%s: readiness path" % label)
    check(probes["livenessProbe"]["httpGet"]["path"] == "/health", "%s: liveness path" % label)
    check(probes["startupProbe"]["httpGet"]["path"] == "/health", "%s: startup path" % label)
    pre = c["lifecycle"]["preStop"]["exec"]["command"]
    check(pre[0] == "sleep", "%s: preStop is not a sleep" % label)
    pre_stop = float(pre[1])
    drain = float(setting("drain-timeout"))
    grace = pod["terminationGracePeriodSeconds"]
    check(grace >= pre_stop + drain + 5,
          "%s: terminationGracePeriodSeconds %s < preStop %s + drain %s + 5" % (
              label, grace, pre_stop, drain))
    sc = pod.get("securityContext", {})
    check(sc.get("runAsNonRoot") is True, "%s: runAsNonRoot" % label)
    csc = c.get("securityContext", {})
    check(csc.get("allowPrivilegeEscalation") is False, "%s: allowPrivilegeEscalation" % label)
    check("ALL" in csc.get("capabilities", {}).get("drop", []), "%s: capabilities" % label)
    return c, ports


def main():
    binary, root = sys.argv[1], sys.argv[2]
    deploy = os.path.join(root, "deploy")
    if shutil.which("kubectl") is None:
        print("SKIP: kubectl is not installed")
        sys.exit(77)
    for tool in ("yamllint", "promtool"):
        check(shutil.which(tool) is not None, "%s is not installed (scripts/install-deps.sh "
              "--test installs it)" % tool)

    rc, out = run(["yamllint", "-c", os.path.join(deploy, ".yamllint"), deploy])
    check(rc == 0, "yamllint deploy/ failed:\n" + out)
    rc, out = run(["promtool", "check", "config",
                   os.path.join(deploy, "prometheus", "scrape-config.yaml")])
    check(rc == 0, "promtool check config failed:\n" + out)
    rc, out = run(["promtool", "check", "rules",
                   os.path.join(deploy, "prometheus", "recording-rules.yaml")])
    check(rc == 0, "promtool check rules failed:\n" + out)

    flags = harness.help_flags(harness.serve_help(binary))
    for needed in ("http-port", "host", "drain-timeout", "log-format", "log-level"):
        check(needed in flags, "`bmserve serve --help` lacks --%s" % needed)

    base = render(root, "deploy/kubernetes/base")
    gpu = render(root, "deploy/kubernetes/overlays/gpu")
    check_container(by_kind(base, "Deployment"), flags, "base")
    c, ports = check_container(by_kind(gpu, "Deployment"), flags, "gpu")
    check(str(c["resources"]["limits"].get("nvidia.com/gpu")) == "1",
          "gpu overlay: no nvidia.com/gpu limit")
    env = {e["name"]: e.get("value") for e in c["env"]}
    check(env.get("BMSERVE_BACKEND") == "cuda", "gpu overlay: backend is not cuda")

    dep = by_kind(gpu, "Deployment")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    svc = by_kind(gpu, "Service")
    svc_ports = {p["name"]: p for p in svc["spec"]["ports"]}
    for name in ("http", "grpc"):
        check(name in svc_ports, "Service lacks port %s" % name)
        check(svc_ports[name]["targetPort"] in (name, ports.get(name)),
              "Service port %s targets %s" % (name, svc_ports[name]["targetPort"]))
    for k, v in svc["spec"]["selector"].items():
        check(pod_labels.get(k) == v, "Service selector %s=%s does not match the pods" % (k, v))
    pdb = by_kind(gpu, "PodDisruptionBudget")
    for k, v in pdb["spec"]["selector"]["matchLabels"].items():
        check(pod_labels.get(k) == v, "PDB selector %s=%s does not match the pods" % (k, v))
    sm = by_kind(gpu, "ServiceMonitor")
    ep = sm["spec"]["endpoints"][0]
    check(ep["port"] in svc_ports and ep["path"] == "/metrics", "ServiceMonitor endpoint %s" % ep)
    for k, v in sm["spec"]["selector"]["matchLabels"].items():
        check(svc["metadata"]["labels"].get(k) == v, "ServiceMonitor selector does not match")
    hpa = by_kind(gpu, "HorizontalPodAutoscaler")
    check(hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"], "HPA target")
    hpa_metric = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]

    with open(os.path.join(deploy, "prometheus", "prometheus-adapter-values.yaml")) as f:
        adapter = yaml.safe_load(f)
    rules = adapter["rules"]["custom"]
    rule = [r for r in rules if r["name"]["as"] == hpa_metric]
    check(len(rule) == 1, "no prometheus-adapter rule exposes the HPA metric %s" % hpa_metric)
    series = rule[0]["seriesQuery"].split("{")[0].strip("'\" ")
    check(re.fullmatch(rule[0]["name"]["matches"], series),
          "adapter rule name.matches does not match its series %s" % series)

    # Docker image: ENV flags exist, exposed ports are the defaults.
    with open(os.path.join(root, "Dockerfile")) as f:
        dockerfile = f.read()
    envs = {f["env"] for f in flags.values() if f["env"]}
    for name in set(re.findall(r"\b(BMSERVE_[A-Z0-9_]+)=", dockerfile)):
        check(name in envs, "Dockerfile sets %s, which is not a serve flag" % name)
    exposed = set(re.findall(r"^EXPOSE (.*)$", dockerfile, re.M)[0].split())
    check(flags["http-port"]["default"] in exposed, "Dockerfile does not EXPOSE the HTTP port")
    if "grpc-port" in flags:
        check(flags["grpc-port"]["default"] in exposed, "Dockerfile does not EXPOSE gRPC")
    check(re.search(r"^USER (?!root|0\b)", dockerfile, re.M), "Dockerfile runs as root")
    check("/health" in dockerfile, "Dockerfile HEALTHCHECK does not use /health")

    # Live server: probe paths answer, and every referenced metric exists.
    srv = harness.Server(binary)
    try:
        srv.wait_ready()
        for path in ("/health", "/ready"):
            status, _, _ = srv.request("GET", path)
            check(status == 200, "GET %s on a ready server gave %d" % (path, status), srv)
        _, text = srv.metrics()
        families = harness.metric_families(text)
        refs = {"adapter rule": {series}}
        with open(os.path.join(deploy, "grafana", "bmserve.json")) as f:
            dash = json.load(f)
        exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
        exprs += [v["query"]["query"] for v in dash["templating"]["list"]
                  if isinstance(v.get("query"), dict)]
        refs["grafana dashboard"] = set().union(*(metric_refs(e) for e in exprs))
        with open(os.path.join(deploy, "prometheus", "recording-rules.yaml")) as f:
            refs["recording rules"] = metric_refs(f.read())
        for where, names in refs.items():
            check(names, "%s references no bmserve metric" % where, srv)
            for n in sorted(names):
                check(family_of(n, families) is not None,
                      "%s uses %s, which /metrics does not export" % (where, n), srv)
        check(families.get(series) == "gauge", "HPA series %s is not a gauge" % series, srv)
        n_refs = sum(len(v) for v in refs.values())
        print("ok: manifests render, lint, and match the server (%d metric references)" % n_refs)
    finally:
        srv.stop()


if __name__ == "__main__":
    try:
        main()
    except (KeyError, IndexError, TypeError) as e:
        fail("manifest structure: %r" % (e,))
