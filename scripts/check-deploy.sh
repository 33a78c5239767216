#!/usr/bin/env bash
# Checks the deployment configurations offline:
#   every YAML document under DIR (default deploy/k8s) against the pinned
#   Kubernetes API schema, strictly (unknown fields and duplicate keys fail),
#   plus what a schema cannot see: the kustomization lists every manifest,
#   selectors and ports line up, probes and a hardened securityContext are
#   there, and terminationGracePeriodSeconds covers preStop + SHUTDOWN_GRACE_MS;
#   fly.toml and deploy/fly.self-hosted.toml parse and agree with the binaries'
#   settings (processes, ports, /ready checks, kill_timeout > SHUTDOWN_GRACE_MS),
#   and the Dockerfile builds every binary it copies;
#   in both, each service's metrics port (Fly's [[metrics]], the `metrics`
#   container port and prometheus.io/port) is its METRICS_LISTEN port, and
#   differs from its public port;
#   the webhook worker reads the streams in one process only: its (ingesting)
#   Deployment uses Recreate with at most 1 replica and no autoscaler, and is
#   the only one; on Fly one group, never deployed bluegreen or canary;
#   WEBHOOK_ENDPOINTS (HMAC keys) comes from a secret, never a plain value;
#   FCM_SERVICE_ACCOUNT_FILE names a file mounted read-only from a secret.
# kubernetes-validate bundles the schemas (nothing is fetched while checking);
# it is installed once, pinned, into a virtualenv outside the clone.
#
#   scripts/check-deploy.sh [DIR [FLY_TOML...]]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

dir=${1:-deploy/k8s}
[ $# -gt 1 ] && fly=("${@:2}") || fly=(fly.toml deploy/fly.self-hosted.toml)
kv_version=1.37.0    # kubernetes-validate (its newest release when pinned)
k8s_version=1.32.0   # the Kubernetes API the manifests are checked against
venv=${XDG_CACHE_HOME:-$HOME/.cache}/synckairos/venv-deploy

[ -d "$dir" ] || { log "check-deploy: no directory $dir"; exit 2; }

# tomllib needs Python 3.11 (Debian bookworm's python3).
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  log "installing python3 (3.11 or later is needed)"
  apt_install python3 python3-venv
fi
if ! "$venv/bin/python" -c "import sys, kubernetes_validate.version as v; sys.exit(v.__version__ != '$kv_version')" 2>/dev/null; then
  log "installing kubernetes-validate $kv_version into $venv"
  rm -rf "$venv"
  if ! python3 -m venv "$venv" 2>/dev/null; then
    rm -rf "$venv"
    apt_install python3-venv   # Debian ships venv's ensurepip separately
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install -q --disable-pip-version-check --no-input "kubernetes-validate==$kv_version"
fi

log "check-deploy: $dir against Kubernetes $k8s_version (strict); ${fly[*]}"
SK_WRANGLER=${WRANGLER_TOML:-wrangler.toml} "$venv/bin/python" - "$dir" "$k8s_version" "${fly[@]}" <<'PY'
import math, os, re, sys, tomllib
import yaml
import kubernetes_validate.utils as kv

k8s_dir, k8s_version, *fly_files = sys.argv[1:]
errors = []
def err(where, msg):
    errors.append(f"{where}: {msg}")

# PyYAML keeps the last of two equal keys; the API server's strict decoding refuses them.
class Loader(yaml.SafeLoader):
    pass
def mapping(loader, node, deep=False):
    seen = set()
    for k, _ in node.value:
        key = loader.construct_object(k, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", k.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)
Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)

# --- Kubernetes: the schema -------------------------------------------------
files = sorted(os.path.join(d, f) for d, _, fs in os.walk(k8s_dir) for f in fs
               if f.endswith((".yaml", ".yml")))
if not files:
    err(k8s_dir, "no YAML files")
resources, kustomizations = [], []
for path in files:
    try:
        with open(path) as f:
            docs = [d for d in yaml.load_all(f, Loader=Loader) if d is not None]
    except yaml.YAMLError as e:
        err(path, f"not YAML: {e}")
        continue
    for doc in docs:
        if not isinstance(doc, dict) or not doc.get("apiVersion") or not doc.get("kind"):
            err(path, "a document without apiVersion and kind")
            continue
        what = f"{path}: {doc['kind']}/{(doc.get('metadata') or {}).get('name', '?')}"
        if doc["apiVersion"].startswith("kustomize.config.k8s.io/"):
            kustomizations.append((path, doc))
            continue
        try:
            kv.validate(doc, k8s_version, strict=True)
        except kv.ValidationError as e:
            err(what, f"{'.'.join(map(str, e.path)) or '(top)'}: {e.message}")
            continue
        except kv.SchemaNotFoundError as e:   # the tool only warns; a typo in a kind must fail
            err(what, e.message)
            continue
        except kv.VersionNotSupportedError as e:
            sys.exit(f"check-deploy: {e.message}")
        resources.append((path, doc))
schema_ok = not errors

# Where each binary serves /metrics when METRICS_LISTEN is unset. The
# gateway's and the webhook worker's defaults are read from their one
# declaration; the audit consumer's moves to 9092 with METRICS_LISTEN (read
# from its source once declared there).
def declared_metrics_listen(source):
    try:
        with open(source) as f:
            m = re.search(r'DEFAULT_METRICS_LISTEN: &str = "([^"]+)"', f.read())
    except OSError:
        return None
    return m and m[1]
DEFAULT_METRICS_LISTEN = {
    "fanout-gateway": declared_metrics_listen("fanout-gateway/src/config.rs"),
    "audit-consumer": declared_metrics_listen("audit-consumer/src/config.rs") or "0.0.0.0:9092",
    "webhook-worker": declared_metrics_listen("webhook-worker/src/config.rs"),
    "edge-exporter": declared_metrics_listen("edge-exporter/src/config.rs"),
}
for binary, source in (("fanout-gateway", "fanout-gateway/src/config.rs"),
                       ("webhook-worker", "webhook-worker/src/config.rs"),
                       ("edge-exporter", "edge-exporter/src/config.rs")):
    if not DEFAULT_METRICS_LISTEN[binary]:
        err(source, "no DEFAULT_METRICS_LISTEN declaration")
# Which binaries each workspace package builds (for the Dockerfile's cargo build).
BINARIES = {}
with open("Cargo.toml", "rb") as f:
    members = tomllib.load(f).get("workspace", {}).get("members", [])
for member in members:
    try:
        with open(os.path.join(member, "Cargo.toml"), "rb") as f:
            manifest = tomllib.load(f)
    except OSError:
        continue
    pkg = manifest.get("package", {}).get("name")
    if pkg:
        BINARIES[pkg] = {b["name"] for b in manifest.get("bin", [])} or {pkg}
def port_of(addr):
    tail = str(addr or "").rpartition(":")[2]
    return int(tail) if tail.isdigit() else None

# --- Kubernetes: what the schema cannot see ---------------------------------
# (The cross-checks below assume schema-valid documents: they run only when
# every document passed, so one broken field is reported once.)
def kustomization_lists_every_manifest():
    top = [p for p, _ in kustomizations if os.path.dirname(p) == k8s_dir.rstrip("/")]
    if not top:
        err(k8s_dir, "no kustomization.yaml")
    for path, k in kustomizations:
        base = os.path.dirname(path)
        listed = k.get("resources") or []
        for r in listed:
            if not os.path.exists(os.path.join(base, r)):
                err(path, f"lists {r}, which does not exist")
        # Examples (placeholder Secrets) are deliberately left out of `apply -k`.
        here = {f for f in os.listdir(base) if f.endswith((".yaml", ".yml"))
                and f != os.path.basename(path) and ".example." not in f}
        for f in sorted(here - set(listed)):
            err(path, f"does not list {f}")
kustomization_lists_every_manifest()
if not schema_ok:
    resources = []

by_kind = {}
for path, doc in resources:
    by_kind.setdefault(doc["kind"], []).append((path, doc))
def name(d):
    return (d.get("metadata") or {}).get("name", "?")
deployments = {name(d): (p, d) for p, d in by_kind.get("Deployment", [])}
def pod_labels(d):
    return (d["spec"]["template"].get("metadata") or {}).get("labels") or {}
config_maps = {name(d): d for _, d in by_kind.get("ConfigMap", [])}
secrets = {name(d): d for _, d in by_kind.get("Secret", [])}
hpa_targets = {d["spec"]["scaleTargetRef"]["name"] for _, d in by_kind.get("HorizontalPodAutoscaler", [])
               if d["spec"]["scaleTargetRef"]["kind"] == "Deployment"}

def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())

def port_names(pod):
    return {p.get("name") for c in pod["containers"] for p in c.get("ports", [])} | \
           {p["containerPort"] for c in pod["containers"] for p in c.get("ports", [])}

def prestop_seconds(c):
    pre = ((c.get("lifecycle") or {}).get("preStop") or {})
    if "sleep" in pre:
        return pre["sleep"]["seconds"]
    cmd = (pre.get("exec") or {}).get("command") or []
    if cmd and os.path.basename(cmd[0]) == "sleep" and len(cmd) == 2 and cmd[1].isdigit():
        return int(cmd[1])
    return 0

MARGIN_S = 5   # after SHUTDOWN_GRACE_MS: in-flight requests, closing connections
for dname, (path, d) in deployments.items():
    where = f"{path}: Deployment/{dname}"
    spec, pod = d["spec"], d["spec"]["template"]["spec"]
    labels = pod_labels(d)
    if not matches((spec.get("selector") or {}).get("matchLabels"), labels):
        err(where, "spec.selector.matchLabels do not match the pod template's labels")
    if dname in hpa_targets and "replicas" in spec:
        err(where, "has spec.replicas although an autoscaler owns it (every apply would reset it)")
    pod_sc = pod.get("securityContext") or {}
    for c in pod.get("initContainers", []) + pod["containers"]:
        cw, sc = f"{where}: container {c['name']}", c.get("securityContext") or {}
        if not (sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))):
            err(cw, "runAsNonRoot is not true")
        if sc.get("readOnlyRootFilesystem") is not True or sc.get("allowPrivilegeEscalation") is not False:
            err(cw, "needs readOnlyRootFilesystem: true and allowPrivilegeEscalation: false")
        res = c.get("resources") or {}
        if not res.get("requests") or not res.get("limits"):
            err(cw, "needs resources.requests and resources.limits")
        for src in c.get("envFrom", []):
            ref = (src.get("configMapRef") or {}).get("name")
            if ref and ref not in config_maps:
                err(cw, f"envFrom names ConfigMap {ref}, not among the manifests")
        for e in c.get("env", []):
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            if ref and not ref.get("optional") and ref["name"] in secrets:
                s = secrets[ref["name"]]
                if ref["key"] not in {**(s.get("data") or {}), **(s.get("stringData") or {})}:
                    err(cw, f"needs key {ref['key']} of Secret {ref['name']}, which its example lacks")
    for c in pod["containers"]:
        cw = f"{where}: container {c['name']}"
        for probe in ("readinessProbe", "livenessProbe"):
            get = (c.get(probe) or {}).get("httpGet")
            if not get:
                err(cw, f"no HTTP {probe}")
            elif get["port"] not in port_names(pod):
                err(cw, f"{probe} port {get['port']} is not a container port")
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        if "SHUTDOWN_GRACE_MS" not in env or not str(env["SHUTDOWN_GRACE_MS"]).isdigit():
            err(cw, "SHUTDOWN_GRACE_MS must be set (a number) so the grace period can be checked")
            continue
        grace = math.ceil(int(env["SHUTDOWN_GRACE_MS"]) / 1000)
        sleep = prestop_seconds(c)
        tgps = pod.get("terminationGracePeriodSeconds", 30)
        if tgps < sleep + grace + MARGIN_S:
            err(cw, f"terminationGracePeriodSeconds {tgps} < preStop {sleep} + "
                    f"SHUTDOWN_GRACE_MS {grace} s + margin {MARGIN_S} s")

# /metrics on an internal port of its own: METRICS_LISTEN set, its port the
# container port named `metrics` and the scrape annotation's, never LISTEN's.
for dname, (path, d) in deployments.items():
    annotations = (d["spec"]["template"].get("metadata") or {}).get("annotations") or {}
    for c in d["spec"]["template"]["spec"]["containers"]:
        cw = f"{path}: Deployment/{dname}: container {c['name']}"
        binary = os.path.basename((c.get("command") or [""])[0])
        if binary not in DEFAULT_METRICS_LISTEN:
            continue
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        metrics = port_of(env.get("METRICS_LISTEN"))
        if metrics is None:
            err(cw, "METRICS_LISTEN must be set (host:port) so its port can be checked")
            continue
        named = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        if named.get("metrics") != metrics:
            err(cw, f"container port `metrics` {named.get('metrics')} is not METRICS_LISTEN's port {metrics}")
        if metrics == port_of(env.get("LISTEN")):
            err(cw, f"METRICS_LISTEN's port {metrics} is the public port (LISTEN)")
        if annotations.get("prometheus.io/scrape") != "true":
            err(cw, "the pod template lacks prometheus.io/scrape: \"true\"")
        elif annotations.get("prometheus.io/port") != str(metrics) or annotations.get("prometheus.io/path") != "/metrics":
            err(cw, f"prometheus.io/port {annotations.get('prometheus.io/port')!r} and path "
                    f"{annotations.get('prometheus.io/path')!r} are not METRICS_LISTEN's port {metrics} and /metrics")

# The webhook worker: only one process may read the streams (WEBHOOK_INGEST,
# default true), or a session's events can be sent out of order. So the
# Deployment of an ingesting worker replaces its pod with Recreate (never two
# side by side), runs at most 1 replica, has no autoscaler, and is the only one.
def ingesting_webhook_worker(argv, env):
    if os.path.basename((argv or [""])[0]) != "webhook-worker" or "run" not in argv[1:]:
        return False
    for i, a in enumerate(argv):   # the flag beats the environment
        if a.startswith("--ingest="):
            return a.split("=", 1)[1].lower() != "false"
        if a == "--ingest" and i + 1 < len(argv):
            return argv[i + 1].lower() != "false"
    return str(env.get("WEBHOOK_INGEST") or "true").lower() != "false"
ingesters = []
for dname, (path, d) in deployments.items():
    where, spec = f"{path}: Deployment/{dname}", d["spec"]
    for c in d["spec"]["template"]["spec"]["containers"]:
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        if not ingesting_webhook_worker((c.get("command") or []) + (c.get("args") or []), env):
            continue
        ingesters.append(where)
        if (spec.get("strategy") or {}).get("type") != "Recreate":
            err(where, "runs the ingesting webhook worker: needs strategy type Recreate "
                       "(a rolling update would run two stream readers side by side)")
        if spec.get("replicas", 1) > 1:
            err(where, f"runs the ingesting webhook worker with {spec['replicas']} replicas: at most 1 may read "
                       "the streams (more senders: a Deployment of their own with WEBHOOK_INGEST=false)")
        if dname in hpa_targets:
            err(where, "runs the ingesting webhook worker under an autoscaler: at most 1 replica may read the streams")
if len(ingesters) > 1:
    err(k8s_dir, f"{len(ingesters)} Deployments run an ingesting webhook worker ({'; '.join(ingesters)}): "
                 "only one may read the streams")

# Secrets stay secrets: the endpoints' JSON holds their HMAC keys; the FCM
# key file is mounted read-only from a Secret, at the path FCM_SERVICE_ACCOUNT_FILE names.
def secret_value(ref):
    s = secrets.get(ref["name"])
    return s and {**(s.get("data") or {}), **(s.get("stringData") or {})}.get(ref["key"])
for dname, (path, d) in deployments.items():
    pod = d["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for c in pod.get("initContainers", []) + pod["containers"]:
        cw = f"{path}: Deployment/{dname}: container {c['name']}"
        env = {e["name"]: e for e in c.get("env", [])}
        if "WEBHOOK_ENDPOINTS" in env and "secretKeyRef" not in (env["WEBHOOK_ENDPOINTS"].get("valueFrom") or {}):
            err(cw, "WEBHOOK_ENDPOINTS holds HMAC keys: it must come from a Secret (secretKeyRef), not a value")
        if "FCM_SERVICE_ACCOUNT_FILE" not in env:
            continue
        e = env["FCM_SERVICE_ACCOUNT_FILE"]
        ref = (e.get("valueFrom") or {}).get("secretKeyRef")
        file = secret_value(ref) if ref else e.get("value")
        if not file:
            continue   # the Secret is not among the manifests: its value cannot be seen
        mounts = [m for m in c.get("volumeMounts", []) if os.path.dirname(file) == m["mountPath"].rstrip("/")]
        vol = mounts and volumes.get(mounts[0]["name"])
        if not vol or "secret" not in vol:
            err(cw, f"FCM_SERVICE_ACCOUNT_FILE {file} is not in a directory mounted from a Secret volume")
            continue
        if not mounts[0].get("readOnly"):
            err(cw, f"the FCM key's volume {vol['name']} is not mounted readOnly")
        items = vol["secret"].get("items")
        if items is not None and os.path.basename(file) not in {i["path"] for i in items}:
            err(cw, f"FCM_SERVICE_ACCOUNT_FILE {file}: volume {vol['name']} has no item with path {os.path.basename(file)}")
        if ref and bool(ref.get("optional")) != bool(vol["secret"].get("optional")):
            err(cw, f"FCM_SERVICE_ACCOUNT_FILE's secretKeyRef and volume {vol['name']} must both be optional "
                    "(push off without the key) or both required")

def selected_deployment(where, selector):
    hits = [(n, pd) for n, pd in deployments.items()
            if matches(selector, pod_labels(pd[1]))]
    if not hits:
        err(where, f"selector {selector} matches no Deployment's pods")
    return hits
for path, s in by_kind.get("Service", []):
    where, spec = f"{path}: Service/{name(s)}", s.get("spec") or {}
    for _, (_, d) in selected_deployment(where, spec.get("selector")):
        for p in spec.get("ports", []):
            if p.get("targetPort", p["port"]) not in port_names(d["spec"]["template"]["spec"]):
                err(where, f"targetPort {p.get('targetPort')} is not a container port of Deployment/{name(d)}")
            metrics_ports = {q["containerPort"] for c in d["spec"]["template"]["spec"]["containers"]
                             for q in c.get("ports", []) if q.get("name") == "metrics"}
            if p.get("targetPort", p["port"]) in metrics_ports | {"metrics"}:
                err(where, "exposes the internal metrics port")
for path, b in by_kind.get("PodDisruptionBudget", []):
    selected_deployment(f"{path}: PodDisruptionBudget/{name(b)}",
                        (b["spec"].get("selector") or {}).get("matchLabels"))
for path, h in by_kind.get("HorizontalPodAutoscaler", []):
    ref = h["spec"]["scaleTargetRef"]
    if ref["kind"] != "Deployment" or ref["name"] not in deployments:
        err(f"{path}: HorizontalPodAutoscaler/{name(h)}", f"targets {ref['kind']}/{ref['name']}, not among the manifests")

# --- Fly.io -----------------------------------------------------------------
def seconds(v):
    if isinstance(v, int):
        return v
    m = re.fullmatch(r"(\d+)(ms|s|m)", str(v))
    if not m:
        raise ValueError(f"not a duration: {v!r}")
    return int(m[1]) * {"ms": 0.001, "s": 1, "m": 60}[m[2]]

for path in fly_files:
    try:
        with open(path, "rb") as f:
            fly = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        err(path, f"not TOML: {e}")
        continue
    env, procs = fly.get("env", {}), fly.get("processes", {})
    dockerfile = os.path.join(os.path.dirname(path), fly.get("build", {}).get("dockerfile", "Dockerfile"))
    image = ""
    if os.path.exists(dockerfile):
        with open(dockerfile) as f:
            image = f.read()
    else:
        err(path, f"no Dockerfile at {dockerfile}")
    if not procs.get("app", "").startswith("/usr/local/bin/fanout-gateway"):
        err(path, "no `app` process running /usr/local/bin/fanout-gateway")
    if "audit" in procs and procs["audit"].split()[:2] != ["/usr/local/bin/audit-consumer", "run"]:
        err(path, "the `audit` process is not `/usr/local/bin/audit-consumer run`")
    if "webhooks" in procs and procs["webhooks"].split()[:2] != ["/usr/local/bin/webhook-worker", "run"]:
        err(path, "the `webhooks` process is not `/usr/local/bin/webhook-worker run`")
    built = set()
    for m in re.finditer(r"cargo build [^\n]*", image):
        for pkg in re.findall(r"(?:-p|--package)[ =](\S+)", m[0]):
            built |= BINARIES.get(pkg, set())
    for cmd in procs.values():
        binary = cmd.split()[0]
        if image and not re.search(rf"COPY --from=\S+ \S+/{re.escape(os.path.basename(binary))} {re.escape(binary)}\s", image):
            err(path, f"{binary} is not copied into the image by {dockerfile}")
        elif image and os.path.basename(binary) not in built:
            err(path, f"{binary}: its package is not in the `cargo build` of {dockerfile}")
    if fly.get("kill_signal") != "SIGTERM":
        err(path, "kill_signal is not SIGTERM (the binaries shut down gracefully on SIGTERM)")
    grace_ms = int(env.get("SHUTDOWN_GRACE_MS", 10_000 if {"audit", "webhooks"} & set(procs) else 5_000))
    try:
        if seconds(fly.get("kill_timeout", 5)) <= grace_ms / 1000:
            err(path, f"kill_timeout {fly.get('kill_timeout', 5)} is not above SHUTDOWN_GRACE_MS {grace_ms} ms")
    except ValueError as e:
        err(path, f"kill_timeout: {e}")
    port = int(str(env.get("LISTEN", "")).rpartition(":")[2] or 0)
    hs = fly.get("http_service", {})
    if hs.get("internal_port") != port:
        err(path, f"http_service.internal_port {hs.get('internal_port')} is not LISTEN's port {port}")
    if hs.get("processes") != ["app"]:
        err(path, "http_service must serve the `app` group only")
    if not any(c.get("path") == "/ready" for c in hs.get("checks", [])):
        err(path, "http_service has no check on /ready")
    limit = hs.get("concurrency", {}).get("hard_limit")
    if limit is not None and "MAX_CONNECTIONS" in env and limit != int(env["MAX_CONNECTIONS"]):
        err(path, f"http_service.concurrency.hard_limit {limit} is not MAX_CONNECTIONS {env['MAX_CONNECTIONS']}")
    for group in ("audit", "webhooks"):
        if group in procs and not any(c.get("path") == "/ready" and group in c.get("processes", [])
                                      and c.get("port") == port for c in fly.get("checks", {}).values()):
            err(path, f"no check on the {group} group's /ready")
    # One stream reader: one group (scaled to one machine: `fly scale count
    # webhooks=1`, which fly.toml cannot hold), replaced in place on deploy.
    readers = [g for g, cmd in procs.items() if ingesting_webhook_worker(cmd.split(), env)]
    if len(readers) > 1:
        err(path, f"process groups {readers} all run an ingesting webhook worker: only one may read the streams")
    strategy = fly.get("deploy", {}).get("strategy", "rolling")
    if readers and strategy not in ("rolling", "immediate"):
        err(path, f"[deploy] strategy {strategy!r} starts a second `{readers[0]}` machine beside the first "
                  "(two stream readers): use rolling")
    if "WEBHOOK_ENDPOINTS" in env:
        err(path, "WEBHOOK_ENDPOINTS holds HMAC keys: set it with `fly secrets set`, not in [env]")
    written_files = fly.get("files", [])
    written_files = [written_files] if isinstance(written_files, dict) else written_files
    fcm = env.get("FCM_SERVICE_ACCOUNT_FILE")
    if fcm:
        wanted = [g for g, cmd in procs.items() if os.path.basename(cmd.split()[0]) == "webhook-worker"]
        written = [f for f in written_files if f.get("guest_path") == fcm]
        if not any(f.get("secret_name") for f in written):
            err(path, f"FCM_SERVICE_ACCOUNT_FILE {fcm}: no [[files]] entry writes it from a secret (secret_name)")
        for g in wanted:
            if not any(g in f.get("processes", list(procs)) for f in written):
                err(path, f"FCM_SERVICE_ACCOUNT_FILE {fcm}: no [[files]] entry writes it on the `{g}` machines")
    metrics = fly.get("metrics", [])
    metrics = [metrics] if isinstance(metrics, dict) else metrics
    for group, cmd in procs.items():
        binary = os.path.basename(cmd.split()[0])
        if binary not in DEFAULT_METRICS_LISTEN:
            continue
        listen = env.get("METRICS_LISTEN") or DEFAULT_METRICS_LISTEN[binary]
        mport = port_of(listen)
        scraped = [m for m in metrics if group in m.get("processes", list(procs))]
        if not scraped:
            err(path, f"no [[metrics]] section scrapes the `{group}` group")
        for m in scraped:
            if m.get("port") != mport or m.get("path") != "/metrics":
                err(path, f"[[metrics]] of `{group}`: port {m.get('port')} path {m.get('path')!r} is not "
                          f"METRICS_LISTEN's ({listen}) /metrics")
        if mport == port:
            err(path, f"`{group}`: METRICS_LISTEN's port {mport} is the public port (LISTEN)")
    if path.endswith("fly.self-hosted.toml"):
        if "audit" not in procs:
            err(path, "no `audit` process group")
        if env.get("REST_API") != "on" or env.get("EXPIRY", "on") != "on":
            err(path, "the self-hosted service needs REST_API=on and EXPIRY on")

# wrangler.toml: a plain `wrangler deploy` is production, and no deployable
# configuration may start open (AUTH_MODE=disabled is for .dev.vars only).
wrangler = os.environ.get("SK_WRANGLER")
if wrangler:
    try:
        with open(wrangler, "rb") as f:
            w = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        err(wrangler, f"not TOML: {e}")
        w = None
    if w is not None:
        envs = {"the top level": w, **{f"[env.{k}]": v for k, v in w.get("env", {}).items()}}
        for name, e in envs.items():
            v = e.get("vars", {})
            if v.get("AUTH_MODE") != "jwt":
                err(wrangler, f"{name}: AUTH_MODE is {v.get('AUTH_MODE')!r}; every deployable configuration needs \"jwt\"")
            for k, val in v.items():
                if not isinstance(val, str):
                    err(wrangler, f"{name}: {k} must be a string (the worker reads only text bindings)")
        prod = w.get("env", {}).get("production")
        if prod is not None and (prod.get("name") != w.get("name") or prod.get("vars") != w.get("vars")):
            err(wrangler, "[env.production] must repeat the top level: a plain `wrangler deploy` is production")
        for name, e in envs.items():
            if name not in ("the top level", "[env.production]") and e.get("name") in (None, w.get("name")):
                err(wrangler, f"{name}: needs a name of its own, or it deploys over production")

for e in errors:
    print(f"check-deploy: {e}", file=sys.stderr)
print(f"check-deploy: {len(files)} manifest files, {len(kustomizations)} kustomization, "
      f"{len(fly_files)} Fly configuration(s){', ' + wrangler if wrangler else ''}: {'FAILED, ' + str(len(errors)) + ' problem(s)' if errors else 'ok'}",
      file=sys.stderr)
sys.exit(1 if errors else 0)
PY
