"""Checks mcptap's deployment files against each other, the Kubernetes
schemas, promtool and a real /metrics scrape of the agent.

Usage: check_deploy.py REPO_ROOT METRICS_SCRAPE_FILE WORK_DIR

- deploy/kubernetes/*.yaml: kubernetes-validate --strict (offline schemas of
  Kubernetes 1.37); a deliberately broken copy must fail (the validator
  really validates); the ServiceMonitor (a CRD, no schema offline) selects
  the Service and names one of its ports.
- the DaemonSet, the Helm chart's defaults and the systemd unit grant the
  same capabilities; probes use /healthz and /readyz on the metrics port.
- the Helm chart: Chart.yaml and values.yaml parse, every `.Values.x.y` its
  templates use is defined, its copy of the alerting rules is identical.
  (Not rendered: no helm binary comes from this project's registries.)
- the Grafana dashboard: unique ids, no overlapping panels, every template
  variable defined; every query is valid PromQL (promtool, through a
  recording rule per query, with the variables substituted).
- every metric the dashboard and the rules query is in the scrape.

Output (last stdout line): JSON {"problems": [...], "capabilities": [...],
"metrics_checked": [...]}; exit 1 when there are problems.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

root, scrape_file, work = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
work.mkdir(parents=True, exist_ok=True)
deploy = root / "deploy"
problems: list[str] = []
venv_bin = Path(sys.executable).parent


def problem(msg: str) -> None:
    problems.append(msg)


# --- Kubernetes -------------------------------------------------------------
k8s = sorted((deploy / "kubernetes").glob("*.yaml"))
docs = [(p, d) for p in k8s for d in yaml.safe_load_all(p.read_text()) if d]
builtin = [p for p in k8s if not any(d["apiVersion"].startswith("monitoring.coreos.com") for q, d in docs if q == p)]
r = subprocess.run([venv_bin / "kubernetes-validate", "--strict", *map(str, builtin)], capture_output=True, text=True)
if r.returncode != 0:
    problem(f"kubernetes-validate: {r.stdout}{r.stderr}")
passed = r.stdout.count(" passed ")
if passed != sum(1 for p, d in docs if p in builtin):
    problem(f"kubernetes-validate passed {passed} objects: {r.stdout}")

by_kind = {d["kind"]: d for _, d in docs}
for kind in ["Namespace", "ServiceAccount", "ConfigMap", "DaemonSet", "Service", "ServiceMonitor"]:
    if kind not in by_kind:
        problem(f"deploy/kubernetes has no {kind}")
ds, svc, sm = by_kind.get("DaemonSet"), by_kind.get("Service"), by_kind.get("ServiceMonitor")

# The validator must reject a broken DaemonSet (a test that cannot fail is no test).
broken = json.loads(json.dumps(ds))
broken["spec"]["template"]["spec"]["hostPID"] = "yes"
broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]["addd"] = ["BPF"]
(work / "broken.yaml").write_text(yaml.safe_dump(broken))
r = subprocess.run([venv_bin / "kubernetes-validate", "--strict", str(work / "broken.yaml")], capture_output=True, text=True)
if r.returncode == 0:
    problem("kubernetes-validate accepted a broken DaemonSet")

pod = ds["spec"]["template"]["spec"]
container = pod["containers"][0]
if not pod.get("hostPID"):
    problem("the DaemonSet needs hostPID")
sc = container["securityContext"]
if sc.get("privileged") or sc.get("allowPrivilegeEscalation") is not False or sc["capabilities"].get("drop") != ["ALL"]:
    problem(f"the DaemonSet's securityContext is wider than needed: {sc}")
ds_caps = sorted(sc["capabilities"]["add"])
metrics_port = next(p for p in container["ports"] if p["name"] == "metrics")["containerPort"]
if f"--metrics-addr=0.0.0.0:{metrics_port}" not in container["args"]:
    problem("the DaemonSet's --metrics-addr does not match its metrics port")
for probe, path in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]:
    got = container.get(probe, {}).get("httpGet", {})
    if got.get("path") != path or got.get("port") != "metrics":
        problem(f"{probe}: {got}")
mounts = {m["mountPath"] for m in container["volumeMounts"]}
for need in ["/sys/kernel/tracing", "/sys/kernel/btf", "/var/lib/mcptap"]:
    if need not in mounts:
        problem(f"the DaemonSet does not mount {need}")
if not all(k in container.get("resources", {}) for k in ["requests", "limits"]):
    problem("the DaemonSet has no resource requests and limits")

# ServiceMonitor → Service → pods.
sel = sm["spec"]["selector"]["matchLabels"]
if not all(svc["metadata"]["labels"].get(k) == v for k, v in sel.items()):
    problem(f"the ServiceMonitor's selector {sel} does not select the Service")
if sm["spec"]["endpoints"][0]["port"] not in {p["name"] for p in svc["spec"]["ports"]}:
    problem("the ServiceMonitor's port is not one of the Service's")
if not all(pod_labels := ds["spec"]["template"]["metadata"]["labels"]) or not all(
    pod_labels.get(k) == v for k, v in svc["spec"]["selector"].items()
):
    problem("the Service does not select the DaemonSet's pods")

# --- systemd: the same capabilities ---------------------------------------
unit = (deploy / "systemd/mcptap.service").read_text()
line = next(l for l in unit.splitlines() if l.startswith("CapabilityBoundingSet="))
unit_caps = sorted(c.removeprefix("CAP_") for c in line.split("=", 1)[1].split())
if unit_caps != ds_caps:
    problem(f"systemd unit capabilities {unit_caps} != DaemonSet {ds_caps}")

# --- Helm -----------------------------------------------------------------
chart = deploy / "helm/mcptap"
meta = yaml.safe_load((chart / "Chart.yaml").read_text())
for k in ["apiVersion", "name", "version", "appVersion"]:
    if k not in meta:
        problem(f"Chart.yaml has no {k}")
values = yaml.safe_load((chart / "values.yaml").read_text())
if sorted(values["capabilities"]) != ds_caps:
    problem(f"Helm default capabilities {values['capabilities']} != DaemonSet {ds_caps}")
for tpl in sorted((chart / "templates").glob("*")):
    for ref in re.findall(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", tpl.read_text()):
        node = values
        for part in ref.strip(".").split("."):
            if not isinstance(node, dict) or part not in node:
                problem(f"{tpl.name}: .Values{ref} is not in values.yaml")
                break
            node = node[part]
if (chart / "files/mcptap-rules.yaml").read_text() != (deploy / "prometheus/mcptap-rules.yaml").read_text():
    problem("deploy/helm/mcptap/files/mcptap-rules.yaml differs from deploy/prometheus/mcptap-rules.yaml")

# --- Grafana --------------------------------------------------------------
dash = json.loads((deploy / "grafana/mcptap-dashboard.json").read_text())
panels = dash["panels"]
ids = [p["id"] for p in panels]
if len(ids) != len(set(ids)):
    problem("duplicate panel ids")
cells = {}
for p in panels:
    g = p["gridPos"]
    if g["x"] + g["w"] > 24:
        problem(f"panel {p['title']} is wider than the grid")
    for x in range(g["x"], g["x"] + g["w"]):
        for y in range(g["y"], g["y"] + g["h"]):
            if (x, y) in cells:
                problem(f"panels {cells[(x, y)]!r} and {p['title']!r} overlap")
            cells[(x, y)] = p["title"]
variables = {v["name"] for v in dash["templating"]["list"]}
queries = []  # (where, expr)
for p in panels:
    for t in p.get("targets", []):
        queries.append((f"panel {p['title']!r} {t['refId']}", t["expr"]))
for v in dash["templating"]["list"]:
    if v["type"] == "query":
        m = re.fullmatch(r"label_values\((\w+), *(\w+)\)", v["definition"])
        if not m:
            problem(f"variable {v['name']}: {v['definition']}")
        else:
            queries.append((f"variable {v['name']}", m.group(1)))
for where, expr in queries:
    for ref in re.findall(r"\$\{?(\w+)", expr):
        if ref not in variables and not ref.startswith("__"):
            problem(f"{where}: ${ref} is not a dashboard variable")


def substitute(expr: str) -> str:
    return re.sub(r"\$\{?\w+\}?", ".*", expr.replace("$__rate_interval", "5m"))


rules = {"groups": [{"name": "dashboard", "rules": [
    {"record": f"dashboard:query_{i}", "expr": substitute(e)} for i, (_, e) in enumerate(queries)]}]}
(work / "dashboard-queries.yaml").write_text(yaml.safe_dump(rules))
r = subprocess.run(["promtool", "check", "rules", str(work / "dashboard-queries.yaml")], capture_output=True, text=True)
if r.returncode != 0:
    problem(f"dashboard queries are not valid PromQL: {r.stdout}{r.stderr}")

# --- Every queried metric exists in the scrape ------------------------------
scraped = set(re.findall(r"^# TYPE (\S+) (\S+)", scrape_file.read_text(), re.M))
scraped_names = {n for n, _ in scraped}
histograms = {n for n, t in scraped if t == "histogram"}
alert_rules = yaml.safe_load((deploy / "prometheus/mcptap-rules.yaml").read_text())
exprs = [e for _, e in queries] + [r["expr"] for g in alert_rules["groups"] for r in g["rules"]]
FUNCS = {"sum", "rate", "increase", "histogram_quantile", "count", "max", "min", "avg", "by", "without", "on", "ignoring",
         "and", "or", "unless", "label_values", "abs", "topk", "bool", "offset", "group_left", "group_right", "le"}
# `up` is Prometheus's own series per scrape target, not the agent's.
SYNTHETIC = {"up"}
used = set()
for e in exprs:
    e = substitute(e)
    e = re.sub(r"\{[^}]*\}", "", e)  # label matchers
    e = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", e)  # grouping labels
    e = re.sub(r'"[^"]*"', "", e)
    e = re.sub(r"\[[^\]]*\]", "", e)
    for name in re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", e):
        if name in FUNCS or re.fullmatch(r"\d+[smhdwy]?", name):
            continue
        used.add(name)
for name in sorted(used):
    base = re.sub(r"_(bucket|sum|count)$", "", name)
    if name in SYNTHETIC:
        continue
    if name in scraped_names or (base in histograms and name != base):
        continue
    problem(f"{name} is queried but not in the agent's /metrics scrape")

print(json.dumps({"problems": problems, "capabilities": ds_caps, "metrics_checked": sorted(used)}))
sys.exit(1 if problems else 0)
