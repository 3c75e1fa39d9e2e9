"""The deployable files are checked as far as can be without a cluster.

* every KubeRay manifest against the ``openAPIV3Schema`` of its CRD (KubeRay v1.7, ``tests/data/kuberay-crds``),
  strictly: an unknown field fails, as with ``kubectl apply --validate=strict`` (a lenient API server would
  silently prune it);
* across manifests: unique names and head Services, every referenced Secret, PVC, Service and RayCluster
  created somewhere, readiness probes on ``/readyz``, the runtime environments Ray would accept;
* ``ray_cluster.yaml`` and ``ray_cluster.local.yaml`` with Ray's own cluster-config validation.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBERAY = ROOT / "infra" / "kuberay"
CRDS = ROOT / "tests" / "data" / "kuberay-crds"
Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are 4 MB of YAML


def manifests() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.name, doc)
        for path in sorted(KUBERAY.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def comments() -> str:
    return "\n".join(line for path in KUBERAY.glob("*.yaml") for line in path.read_text().splitlines() if "#" in line)


# -- CRD schemas -----------------------------------------------------------------------------------


def strict(node: Any) -> Any:
    """A CRD's structural schema as a JSON schema that also refuses unknown fields."""
    if isinstance(node, list):
        return [strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict(v) for k, v in node.items() if not k.startswith("x-kubernetes-") and k != "nullable"}
    if node.get("x-kubernetes-int-or-string"):
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if node.get("x-kubernetes-embedded-resource"):
        props = out.setdefault("properties", {})
        for key in ("apiVersion", "kind"):
            props.setdefault(key, {"type": "string"})
        props.setdefault("metadata", {"type": "object"})
    open_ended = node.get("x-kubernetes-preserve-unknown-fields") or "additionalProperties" in node
    if out.get("type") == "object" and "properties" in out and not open_ended:
        out["additionalProperties"] = False
    return out


@cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    found = {}
    for path in CRDS.glob("ray.io_*.yaml"):
        crd = yaml.load(path.read_text(), Loader=Loader)
        kind = crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            found[(f"{crd['spec']['group']}/{version['name']}", kind)] = strict(version["schema"]["openAPIV3Schema"])
    return found


def validate(doc: dict[str, Any]) -> None:
    schema = crd_schemas()[(doc["apiVersion"], doc["kind"])]
    jsonschema.Draft7Validator(schema).validate(doc)


RAY_KINDS = {"RayCluster", "RayJob", "RayService", "RayCronJob"}


def test_the_crds_cover_every_kuberay_kind() -> None:
    assert {kind for _, kind in crd_schemas()} == RAY_KINDS
    assert {doc["kind"] for _, doc in manifests()} >= RAY_KINDS  # a manifest of each kind ships


@pytest.mark.parametrize(("where", "doc"), [m for m in manifests() if m[1]["kind"] in RAY_KINDS])
def test_kuberay_manifests_match_their_crd_schema(where: str, doc: dict[str, Any]) -> None:
    validate(doc)


def test_the_strict_schema_catches_a_misspelt_or_misplaced_field() -> None:
    cluster = dict(manifests())["raycluster.yaml"]
    validate(cluster)
    for path, value in [
        (["spec", "workerGroupSpecs", 0, "minReplica"], 0),  # misspelt
        (["spec", "headGroupSpec", "template", "spec", "containers", 0, "resource"], {}),  # misspelt, deep in a pod
        (["spec", "workerGroupSpecs", 0, "replicas"], "two"),  # wrong type
    ]:
        bad = copy.deepcopy(cluster)
        node: Any = bad
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        with pytest.raises(jsonschema.ValidationError):
            validate(bad)


# -- across manifests ------------------------------------------------------------------------------


def walk(node: Any, key: str) -> Iterator[Any]:
    """Every value under ``key``, at any depth."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from walk(v, key)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v, key)


def head_services() -> dict[str, str]:
    """The Services KubeRay creates for the manifests (``<name>-head-svc``, ``<name>-serve-svc``) -> creator."""
    made: dict[str, str] = {}
    for where, doc in manifests():
        name = doc["metadata"]["name"]
        services = {"RayCluster": ["head-svc"], "RayService": ["head-svc", "serve-svc"]}.get(doc["kind"], [])
        for suffix in services:
            svc = f"{name}-{suffix}"
            assert svc not in made, f"{where} and {made[svc]} both make the Service {svc}"
            made[svc] = where
    return made


def test_names_are_unique_and_so_are_the_services_kuberay_makes() -> None:
    seen: dict[tuple[str, str], str] = {}
    for where, doc in manifests():
        key = (doc["kind"], doc["metadata"]["name"])
        assert key not in seen, f"{where} and {seen[key]} both define {key}"
        seen[key] = where
    assert {"unigeoclip-batch-head-svc", "unigeoclip-head-svc", "unigeoclip-serve-svc"} <= set(head_services())


def test_every_referenced_secret_pvc_service_and_cluster_exists() -> None:
    docs = manifests()
    kinds: dict[str, set[str]] = {}
    for _, doc in docs:
        kinds.setdefault(doc["kind"], set()).add(doc["metadata"]["name"])
    documented = set(re.findall(r"kubectl create secret generic (\S+)", comments()))
    secrets = kinds.get("Secret", set()) | documented
    services = set(head_services()) | kinds.get("Service", set())
    for where, doc in docs:
        for ref in walk(doc, "secretKeyRef"):
            assert ref["name"] in secrets, f"{where} reads Secret {ref['name']}, which nothing creates or documents"
        for claim in walk(doc, "persistentVolumeClaim"):
            assert claim["claimName"] in kinds.get("PersistentVolumeClaim", set()), f"{where}: {claim}"
        for selector in walk(doc, "clusterSelector"):
            assert selector["ray.io/cluster"] in kinds["RayCluster"], f"{where} runs on a cluster that is not shipped"
        text = yaml.safe_dump(doc)
        for host in re.findall(r"https?://([a-z0-9-]+)[:/]", text):  # in-namespace names (no dots)
            assert host in services, f"{where} calls {host}, a Service no manifest creates"


def test_readiness_probes_ask_whether_the_service_can_answer() -> None:
    probes = [(where, p) for where, doc in manifests() for p in walk(doc, "readinessProbe")]
    assert any(where == "rayservice.yaml" for where, _ in probes)
    for where, probe in probes:
        assert probe["httpGet"]["path"] == "/readyz", f"{where}: /healthz only says the process is up"


def test_runtime_environments_are_ones_ray_accepts() -> None:
    from ray.runtime_env import RuntimeEnv

    workdir = re.search(r"^WORKDIR (\S+)", (ROOT / "infra" / "Dockerfile").read_text(), flags=re.M)
    assert workdir
    envs = [(where, yaml.safe_load(text)) for where, doc in manifests() for text in walk(doc, "runtimeEnvYAML")]
    services = [(where, app["runtime_env"]) for where, doc in manifests() for text in walk(doc, "serveConfigV2")
                for app in yaml.safe_load(text)["applications"]]  # fmt: skip
    assert len(envs) >= 2 and services
    for where, env in envs + services:
        # the code is the image's copy of the project (a path that exists only in the image)
        assert env.pop("working_dir").removeprefix("local://") == workdir[1], where
        assert set(env) <= RuntimeEnv.known_fields, (where, set(env) - RuntimeEnv.known_fields)
        RuntimeEnv(**env)  # Ray's own checks of each field's value
        assert env["env_vars"]["HF_HUB_OFFLINE"] == "1", where


# -- Ray cluster launcher configs ------------------------------------------------------------------


def ray_validate(path: Path) -> dict[str, Any]:
    """Ray's own check (the jsonschema ``ray up`` applies), after its provider's defaults where it has them."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(path.read_text())
    if config["provider"]["type"] != "fake_multinode":  # its defaults file is not in the wheel: the file is complete
        config = prepare_config(config)
    validate_config(config)
    return config


@pytest.mark.parametrize("name", ["ray_cluster.yaml", "ray_cluster.local.yaml"])
def test_cluster_configs_pass_rays_validation(name: str) -> None:
    config = ray_validate(ROOT / name)
    types = config["available_node_types"]
    assert config["head_node_type"] == "ray.head.default" and types["ray.head.default"]["resources"]["CPU"] == 0
    assert all(types[t]["min_workers"] == 0 for t in ("cpu_workers", "gpu_workers")), "both groups scale from zero"


def test_the_local_cluster_has_the_node_types_of_the_real_one() -> None:
    real, local = (
        ray_validate(ROOT / n)["available_node_types"] for n in ("ray_cluster.yaml", "ray_cluster.local.yaml")
    )
    assert set(real) == set(local)
    assert real["gpu_workers"]["resources"]["GPU"] == 1 and local["gpu_workers"]["resources"]["accelerator"] == 1


def test_rays_validation_refuses_a_broken_config(tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "ray_cluster.local.yaml").read_text())
    config["available_node_types"]["cpu_workers"]["min_wokers"] = 1
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(jsonschema.ValidationError, match="min_wokers"):
        ray_validate(tmp_path / "bad.yaml")


def test_every_node_of_the_real_cluster_sees_the_shared_storage() -> None:
    config = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    assert any("/mnt/shared" in c for c in config["initialization_commands"])
    assert "-v /mnt/shared:/mnt/shared" in config["docker"]["run_options"]


# -- Prometheus ------------------------------------------------------------------------------------


def test_jobs_push_to_the_pushgateway_prometheus_scrapes() -> None:
    scrape = yaml.safe_load((ROOT / "infra" / "prometheus" / "prometheus.yml").read_text())
    (jobs,) = [j for j in scrape["scrape_configs"] if j["job_name"] == "unigeoclip-jobs"]
    scraped = {t for group in jobs["static_configs"] for t in group["targets"]}
    pushed = {
        host
        for _, doc in manifests()
        for host in re.findall(r"--pushgateway[ =\n-]*https?://(\S+?)/?\s", yaml.safe_dump(doc))
    }
    assert pushed and pushed <= scraped, (pushed, scraped)
    assert jobs["honor_labels"] is True, "keep the pushed job and instance labels"


def test_the_local_prometheus_config_is_one_prometheus_loads() -> None:
    """promtool from Debian's prometheus (installed by `make test`). Debian builds Prometheus without
    Kubernetes discovery, so the Kubernetes file is checked by the tests above and in test_serve_infra only."""
    import shutil
    import subprocess

    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make test` installs Debian's prometheus"
    local = ROOT / "infra" / "prometheus" / "prometheus.local.yml"
    done = subprocess.run([promtool, "check", "config", "--syntax-only", str(local)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


# -- the control plane, closed -----------------------------------------------------------------------


def pod_templates() -> list[tuple[str, str, dict[str, Any]]]:
    """``(manifest, group, pod template)`` of every pod the manifests make (clusters' groups, the CronJob's pod)."""
    out = []
    for where, doc in manifests():
        spec = doc.get("spec", {})
        cluster = spec.get("rayClusterSpec") or spec.get("rayClusterConfig") or (spec if doc["kind"] == "RayCluster"
                                                                                  else None)  # fmt: skip
        if cluster is not None:
            out.append((where, "head", cluster["headGroupSpec"]["template"]))
            out += [(where, g["groupName"], g["template"]) for g in cluster.get("workerGroupSpecs", [])]
        if doc["kind"] == "CronJob":
            out.append((where, "submit", spec["jobTemplate"]["spec"]["template"]))
    return out


def test_every_ray_cluster_requires_the_token_from_the_secret() -> None:
    clusters = 0
    for where, doc in manifests():
        spec = doc.get("spec", {})
        cluster = spec.get("rayClusterSpec") or spec.get("rayClusterConfig") or (spec if doc["kind"] == "RayCluster"
                                                                                  else None)  # fmt: skip
        if cluster is not None:
            clusters += 1
            assert cluster.get("authOptions") == {"mode": "token", "secretName": "unigeoclip-ray-auth"}, where
    assert clusters == 3
    cron = dict(manifests())["cronjob-refresh.yaml"]
    env = {e["name"]: e for e in walk(cron, "env") for e in e}
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    ref = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == "unigeoclip-ray-auth" and not ref.get("optional"), "no token, no submission"


def test_no_pod_runs_as_root_or_escalates_and_serving_cannot_write_its_data() -> None:
    templates = pod_templates()
    assert len(templates) >= 9
    for where, group, tpl in templates:
        pod = tpl["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0, (
            where,
            group,
        )
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"], (where, group)
            if where in ("rayservice.yaml", "cronjob-refresh.yaml"):  # read-only root, a writable /tmp
                assert sc["readOnlyRootFilesystem"] is True, (where, group)
                assert {m["mountPath"] for m in c["volumeMounts"]} >= {"/tmp"}, (where, group)
        if where == "rayservice.yaml":
            data = [m for c in pod["containers"] for m in c["volumeMounts"] if m["name"] == "data"]
            claims = [v["persistentVolumeClaim"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
            assert data and all(m["readOnly"] for m in data) and all(c["readOnly"] for c in claims), group


def test_the_network_policy_admits_the_control_plane_from_the_platforms_own_pods_only() -> None:
    (policy,) = [doc for _, doc in manifests() if doc["kind"] == "NetworkPolicy"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    for where, group, tpl in pod_templates():  # the policy covers every pod, and every pod is a peer
        labels = tpl["metadata"]["labels"]
        assert selector.items() <= labels.items(), (where, group)
    rules = policy["spec"]["ingress"]
    open_ports = {p["port"] for r in rules if "from" not in r for p in r["ports"]}
    assert open_ports == {8000}, "only the service is open to every peer"
    for r in rules:
        peers = r.get("from", [])
        reach = {p["port"] for p in r.get("ports", [])} or {"all"}
        if {"all", 6379, 8265, 10001} & reach:
            assert peers and all(p.get("podSelector", {}).get("matchLabels") == selector for p in peers), r


def test_the_cronjob_submits_one_ray_job_per_scheduled_run() -> None:
    cron = dict(manifests())["cronjob-refresh.yaml"]
    (container,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert "--submission-id=refresh-$(JOB_NAME)" in container["command"]
    (job_name,) = [e for e in container["env"] if e["name"] == "JOB_NAME"]
    assert "job-name" in job_name["valueFrom"]["fieldRef"]["fieldPath"]  # the Job's name: the same for its retries


def test_the_image_runs_unprivileged_with_every_version_pinned() -> None:
    dockerfile = (ROOT / "infra" / "Dockerfile").read_text()
    users = re.findall(r"^USER (\S+)", dockerfile, flags=re.M)
    assert users and users[-1] not in ("root", "0")
    installs = [line for line in dockerfile.splitlines() if "pip install" in line and "--no-deps" not in line]
    alone = [line for line in installs if "-c infra/constraints.txt" not in line]
    assert all(re.search(r"install --no-cache-dir torch==[\d.]+ *\\?$", line) for line in alone), alone
    pins = [line for line in (ROOT / "infra" / "constraints.txt").read_text().splitlines() if not line.startswith("#")]
    assert pins and all(re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[^=\s]+", p) for p in pins), pins[:3]
    pinned = {p.split("==")[0].lower().replace("_", "-") for p in pins}
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + [
        d for e in ("earth", "files", "eval") for d in project["optional-dependencies"][e]
    ]
    names = {re.split(r"[<>=\[ ]", d)[0].lower().replace("_", "-") for d in wanted} - {"torch"}
    assert names <= pinned, names - pinned


def test_serving_pods_stop_ray_before_they_go() -> None:
    """A rolling update stops each RayService pod the way SIGTERM stops `unigeoclip serve`: Ray first."""
    for where, group, tpl in pod_templates():
        if where != "rayservice.yaml":
            continue
        assert tpl["spec"]["terminationGracePeriodSeconds"] >= 60, group
        for c in tpl["spec"]["containers"]:
            command = " ".join(c["lifecycle"]["preStop"]["exec"]["command"])
            assert "ray stop" in command, (group, command)
