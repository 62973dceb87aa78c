"""Checks deploy/kubernetes without a cluster.

1. `kubectl kustomize` renders the base, and an overlay that adds a plugin component to the
   ConfigMap as users do (when a built component is at hand).
2. Every rendered object is checked against the Kubernetes API schema, as the official Python
   client's models describe it: known kinds only, no unknown field at any depth, each value of
   its declared type, required fields present.
3. The manifests agree with the gateway's own configuration (the TOML in the ConfigMap): ports,
   probes on the admin API, the preStop drain and the grace period against
   limits.shutdown_timeout, the files the configuration names (token, plugin components)
   against the volumes, the selectors, and the container hardening. With a built `wasmgate`,
   `wasmgate check` accepts the configuration.

Run by scripts/check-kubernetes (which installs the client into .venv); prints one line per
check group and exits 1 naming every failure.
"""

import base64
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib

import yaml
from kubernetes import client as k8s

ROOT = pathlib.Path(__file__).resolve().parent.parent
BASE = ROOT / "deploy" / "kubernetes"

# apiVersion and kind → the client's model class.
MODELS = {
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("v1", "Secret"): "V1Secret",
    ("v1", "Service"): "V1Service",
    ("apps/v1", "Deployment"): "V1Deployment",
    ("policy/v1", "PodDisruptionBudget"): "V1PodDisruptionBudget",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "V2HorizontalPodAutoscaler",
    ("networking.k8s.io/v1", "NetworkPolicy"): "V1NetworkPolicy",
}

failures = []


def fail(where, why):
    failures.append(f"{where}: {why}")


def render(directory):
    out = subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, text=True
    )
    if out.returncode != 0:
        sys.exit(f"kubectl kustomize {directory} failed:\n{out.stderr}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


# --- the API schema ---------------------------------------------------------------------------


def check_schema(objects):
    """Each object through its model: the client's models are pydantic models generated from
    the API's OpenAPI schema, strict about types, required fields and unknown fields."""
    for obj in objects:
        key = (obj.get("apiVersion"), obj.get("kind"))
        name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        model = MODELS.get(key)
        if model is None:
            fail(name, f"unexpected apiVersion/kind {key}")
            continue
        try:
            getattr(k8s, model).model_validate(obj)
        except Exception as e:  # pydantic's ValidationError lists every problem with its path
            fail(name, str(e))


# --- agreement with the gateway's configuration -----------------------------------------------


def one(objects, kind):
    found = [o for o in objects if o["kind"] == kind]
    if len(found) != 1:
        sys.exit(f"expected one {kind}, rendered {len(found)}")
    return found[0]


def port_number(container, port):
    """A probe's or policy's port (number or name) → the container's port number."""
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    fail("Deployment", f"port {port!r} is not a named container port")
    return None


def seconds(text):
    return int(str(text).rstrip("s"))


def duration(value):
    """A configuration duration: seconds as a number, or "30s" / "2.5s" / "500ms"."""
    if isinstance(value, (int, float)):
        return float(value)
    m = re.fullmatch(r"([0-9.]+)(ms|s|m|h)?", value.strip())
    if not m:
        sys.exit(f"cannot read duration {value!r}")
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]
    return float(m.group(1)) * scale


def check_agreement(objects):
    deployment = one(objects, "Deployment")
    configmap = one(objects, "ConfigMap")
    pod = deployment["spec"]["template"]
    spec = pod["spec"]
    labels = pod["metadata"]["labels"]
    [container] = [c for c in spec["containers"] if c["name"] == "wasmgate"]

    # The configuration the pods run.
    args = container.get("args", [])
    config_path = pathlib.PurePosixPath(args[args.index("--config") + 1])
    mounts = {pathlib.PurePosixPath(m["mountPath"]): m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    config_mount = mounts.get(config_path.parent)
    if config_mount is None:
        sys.exit(f"Deployment: nothing is mounted at {config_path.parent}")
    if "subPath" in config_mount:
        fail("Deployment", "the configuration is mounted with subPath, which never sees an update")
    config_volume = volumes[config_mount["name"]]
    if config_volume.get("configMap", {}).get("name") != configmap["metadata"]["name"]:
        fail("Deployment", f"{config_path.parent} is not the ConfigMap {configmap['metadata']['name']}")
    text = configmap.get("data", {}).get(config_path.name)
    if text is None:
        sys.exit(f"ConfigMap: no key {config_path.name}")
    config = tomllib.loads(text)

    # Ports: the listeners and the admin API are container ports.
    container_ports = {p["containerPort"] for p in container["ports"]}
    for listener in config.get("listeners", []):
        if listener.get("port") not in container_ports:
            fail("Deployment", f"listener {listener['name']} port {listener.get('port')} is not a container port")
        if listener.get("bind_address", "0.0.0.0") not in ("0.0.0.0", "::"):
            fail("config.toml", f"listener {listener['name']} binds {listener['bind_address']}, unreachable from the Service")
    admin = config.get("admin")
    if admin is None:
        sys.exit("config.toml: no [admin]: the probes have nothing to ask")
    admin_port = admin.get("port", 9190)
    if admin_port not in container_ports:
        fail("Deployment", f"the admin port {admin_port} is not a container port")
    if admin.get("bind_address", "127.0.0.1") not in ("0.0.0.0", "::"):
        fail("config.toml", "[admin] binds loopback: the kubelet's probes cannot reach it")

    # Probes: liveness (and startup) on /api/live, readiness on /api/ready, all on the admin port.
    for probe, path in [
        ("startupProbe", "/api/live"),
        ("livenessProbe", "/api/live"),
        ("readinessProbe", "/api/ready"),
    ]:
        get = container.get(probe, {}).get("httpGet")
        if get is None:
            fail("Deployment", f"no {probe} with httpGet")
            continue
        if get.get("path") != path:
            fail("Deployment", f"{probe} asks {get.get('path')}, not {path}")
        if port_number(container, get.get("port")) != admin_port:
            fail("Deployment", f"{probe} is not on the admin port {admin_port}")
        if get.get("scheme", "HTTP") != ("HTTPS" if "certificate" in admin or "certificate_pfx" in admin else "HTTP"):
            fail("Deployment", f"{probe}'s scheme does not match the admin listener's")

    # The drain: preStop runs `wasmgate drain` against this admin port; the grace period
    # covers its delay and wait plus the shutdown timeout.
    command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    if "drain" not in command:
        fail("Deployment", f"the preStop hook does not drain: {command}")
    else:
        def arg(name, default):
            return command[command.index(name) + 1] if name in command else default
        url = arg("--admin", "http://127.0.0.1:9190")
        if not url.endswith(f":{admin_port}"):
            fail("Deployment", f"preStop drains {url}, not the admin port {admin_port}")
        if pathlib.PurePosixPath(command[0]).name != "wasmgate":
            fail("Deployment", f"preStop runs {command[0]}")
        drain = seconds(arg("--delay", "5")) + seconds(arg("--wait", "0"))
        shutdown = duration(config.get("limits", {}).get("shutdown_timeout", 30))
        grace = spec.get("terminationGracePeriodSeconds", 30)
        if grace < drain + shutdown:
            fail("Deployment", f"terminationGracePeriodSeconds {grace} < drain {drain} + shutdown_timeout {shutdown}")
        env = {e["name"]: e for e in container.get("env", [])}
        if admin.get("token") or admin.get("token_file"):
            if "WASMGATE_ADMIN_TOKEN" not in env:
                fail("Deployment", "preStop's wasmgate drain has no WASMGATE_ADMIN_TOKEN")

    # The token file is the Secret the drain's token comes from.
    env = {e["name"]: e for e in container.get("env", [])}
    if "token_file" in admin:
        token_path = pathlib.PurePosixPath(admin["token_file"])
        mount = mounts.get(token_path.parent)
        secret = volumes.get(mount["name"], {}).get("secret", {}) if mount else {}
        if not secret:
            fail("Deployment", f"token_file {token_path}: no Secret mounted at {token_path.parent}")
        ref = env.get("WASMGATE_ADMIN_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef", {})
        if (ref.get("name"), ref.get("key")) != (secret.get("secretName"), token_path.name):
            fail("Deployment", "WASMGATE_ADMIN_TOKEN is not the token_file's Secret key")
        secrets = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Secret"}
        if secret.get("secretName") in secrets and token_path.name not in secrets[secret["secretName"]].get("data", {}):
            fail("Secret", f"no key {token_path.name}")

    # Plugin components named by the configuration are keys of the same ConfigMap.
    keys = set(configmap.get("data", {})) | set(configmap.get("binaryData", {}))
    for plugin in config.get("plugins", []):
        path = plugin.get("path")
        if path is None:
            continue
        if pathlib.PurePosixPath(path).is_absolute() or "/" in path:
            fail("config.toml", f"plugin {plugin['name']}: {path} is not a file of the ConfigMap")
        elif path not in configmap.get("binaryData", {}):
            fail("ConfigMap", f"plugin {plugin['name']}: no binaryData key {path} (have {sorted(keys)})")

    # The plugin cache lives on a writable volume; the root file system is read-only.
    cache = env.get("WASMGATE_PLUGIN_CACHE_DIR", {}).get("value")
    cache_mount = mounts.get(pathlib.PurePosixPath(cache)) if cache else None
    if cache_mount is None or "emptyDir" not in volumes[cache_mount["name"]]:
        fail("Deployment", "WASMGATE_PLUGIN_CACHE_DIR is not an emptyDir mount")
    hardening = container.get("securityContext", {})
    if hardening.get("readOnlyRootFilesystem") is not True:
        fail("Deployment", "the root file system is not read-only")
    if spec.get("securityContext", {}).get("runAsNonRoot") is not True:
        fail("Deployment", "runAsNonRoot is not set")

    # Selectors: every object that picks the pods picks these.
    def selects(selector, what):
        if any(labels.get(k) != v for k, v in selector.items()):
            fail(what, f"selector {selector} does not match the pods' labels {labels}")
    selects(deployment["spec"]["selector"]["matchLabels"], "Deployment")
    service = one(objects, "Service")
    selects(service["spec"]["selector"], "Service")
    for p in service["spec"]["ports"]:
        if port_number(container, p["targetPort"]) not in {l.get("port") for l in config.get("listeners", [])}:
            fail("Service", f"port {p['name']} does not lead to a listener")
        if port_number(container, p["targetPort"]) == admin_port:
            fail("Service", "exposes the admin port")
    pdb = one(objects, "PodDisruptionBudget")
    selects(pdb["spec"]["selector"]["matchLabels"], "PodDisruptionBudget")
    hpa = one(objects, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    if (target["kind"], target["name"]) != ("Deployment", deployment["metadata"]["name"]):
        fail("HorizontalPodAutoscaler", f"scales {target}")
    if hpa["spec"].get("minReplicas", 1) < 2:
        fail("HorizontalPodAutoscaler", "fewer than 2 replicas leave nothing serving during a drain")
    if not container.get("resources", {}).get("requests", {}).get("cpu"):
        fail("Deployment", "no CPU request: the autoscaler's utilisation has no base")
    policy = one(objects, "NetworkPolicy")
    selects(policy["spec"]["podSelector"]["matchLabels"], "NetworkPolicy")
    for rule in policy["spec"].get("ingress", []):
        ports = {port_number(container, p["port"]) for p in rule.get("ports", [])}
        if admin_port in ports and not rule.get("from"):
            fail("NetworkPolicy", "the admin port is open to every source")
        if not rule.get("ports"):
            fail("NetworkPolicy", "a rule opens every port")
    covered = {port_number(container, p["port"]) for r in policy["spec"].get("ingress", []) for p in r.get("ports", [])}
    if admin_port not in covered:
        fail("NetworkPolicy", "the admin port is not admitted from anywhere (metrics)")

    # The image recipe agrees: the preStop binary and the user the pod runs as.
    containerfile = (ROOT / "Containerfile").read_text()
    entry = re.search(r'^ENTRYPOINT \["([^"]+)"', containerfile, re.M)
    if not entry or (command and entry.group(1) != command[0]):
        fail("Containerfile", f"ENTRYPOINT is not {command[0] if command else '?'}")
    user = re.search(r"^USER (\d+)", containerfile, re.M)
    if not user or int(user.group(1)) != spec.get("securityContext", {}).get("runAsUser"):
        fail("Containerfile", "USER is not the pod's runAsUser")
    return config, configmap


def wasmgate_check(configmap):
    """`wasmgate check` on the ConfigMap's files, with the token file made locally."""
    binary = ROOT / "target" / "debug" / "wasmgate"
    if not binary.exists():
        print("  (no target/debug/wasmgate: wasmgate check skipped)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        for key, value in configmap.get("data", {}).items():
            (tmp / key).write_text(value)
        for key, value in configmap.get("binaryData", {}).items():
            (tmp / key).write_bytes(base64.b64decode(value))
        text = (tmp / "config.toml").read_text()
        (tmp / "token").write_text("a-local-admin-token-for-checking\n")
        text = re.sub(r'(?m)^token_file = .*$', 'token_file = "token"', text)
        (tmp / "config.toml").write_text(text)
        out = subprocess.run(
            [str(binary), "check", "--config", str(tmp / "config.toml")],
            capture_output=True, text=True,
        )
        if out.returncode != 0:
            fail("wasmgate check", out.stdout + out.stderr)


def overlay_with_plugin():
    """A user's overlay: the base, with a configuration naming a plugin and its component
    merged into the ConfigMap. None when no component is built."""
    plugin_dir = pathlib.Path(os.environ.get("WASMGATE_PLUGIN_DIR", ROOT / "target" / "plugins"))
    component = plugin_dir / "example-canary-router.wasm"
    if not component.exists():
        return None, None
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="wasmgate-overlay-"))
    shutil.copy(component, tmp / "canary-router.wasm")
    text = (BASE / "config.toml").read_text()
    text += (
        '\n[[plugins]]\nname = "canary"\nkind = "router"\npath = "canary-router.wasm"\n'
        "config = '{\"variants\": [{\"name\": \"stable\", \"pool\": \"app\", "
        '\"settings\": \"app\", \"weight\": 100}]}\'\n'
        '\n[routing]\nrouter = "canary"\n'
    )
    (tmp / "config.toml").write_text(text)
    (tmp / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {os.path.relpath(BASE, tmp)}\n"
        "configMapGenerator:\n  - name: wasmgate-config\n    behavior: merge\n"
        "    files:\n      - config.toml\n      - canary-router.wasm\n"
    )
    return tmp, component


def main():
    objects = render(BASE)
    kinds = sorted(o["kind"] for o in objects)
    print(f"rendered {len(objects)} objects: {', '.join(kinds)}")
    check_schema(objects)
    print("checked against the Kubernetes API schema (kubernetes client models)")
    config, configmap = check_agreement(objects)
    print("checked ports, probes, drain and volumes against config.toml")
    wasmgate_check(configmap)
    overlay, component = overlay_with_plugin()
    if overlay is None:
        print("  (no built plugin component: the overlay check skipped)")
    else:
        try:
            objects = render(overlay)
            check_schema(objects)
            _, configmap = check_agreement(objects)
            data = configmap.get("binaryData", {}).get("canary-router.wasm")
            if data is None or base64.b64decode(data) != component.read_bytes():
                fail("overlay ConfigMap", "the component is not in binaryData as built")
            wasmgate_check(configmap)
            print("checked an overlay adding a plugin component (binaryData)")
        finally:
            shutil.rmtree(overlay)
    if failures:
        print("\n".join(["FAILED:"] + failures), file=sys.stderr)
        sys.exit(1)
    print("deploy/kubernetes: ok")


if __name__ == "__main__":
    main()
