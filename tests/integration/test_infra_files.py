"""The deployment files (infra/, prefect.yaml) parsed and checked against each other and the code.

No Docker engine or cluster runs here, so the checks are what can be known without one: every
file parses, every service and manifest has what it needs, every `${VAR}` is in the env template,
no credential is written down, and the names that tie the files together (work pools, secrets,
service accounts, the flow's entrypoint and parameters) agree. tests/integration/
test_prefect_deploy.py deploys prefect.yaml and the job template to a real Prefect server.
"""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
COMPOSE_FILES = (INFRA / "compose.yaml", INFRA / "compose.gpu.yaml")
TEMPLATE = INFRA / "prefect" / "k8s-gpu-job-template.json"

# Compose interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}.
# `$$` is a literal dollar (the container's shell expands it).
_COMPOSE_VAR = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)((?::?[-?+])[^}]*)?\}")
_BARE_VAR = re.compile(r"(?<!\$)\$[A-Za-z_]")
_SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY")
# A substitution: ${VAR...} (compose), $(VAR) (Kubernetes), $$VAR or $VAR (a container's shell).
_SUBSTITUTION = re.compile(r"\$\{[^}]*\}|\$\([A-Za-z_]\w*\)|\$\$?[A-Za-z_]\w*")
_URL_USERINFO = re.compile(r"://([^/\s@]+)@")


def _env_example() -> dict[str, str]:
    values = {}
    for line in (INFRA / ".env.example").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example: {line!r} is not KEY=VALUE"
            values[key] = value
    return values


def _compose() -> dict:
    return yaml.safe_load(COMPOSE_FILES[0].read_text())


def _k8s_docs() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted((INFRA / "k8s").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    return docs


def _prefect_yaml() -> dict:
    return yaml.safe_load((ROOT / "prefect.yaml").read_text())


def _env_dict(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "write environment as a mapping"
    return {k: str(v) for k, v in env.items()}


def _walk_strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _walk_strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk_strings(value)


# ---------------------------------------------------------------- compose


def test_compose_services_run_the_stack():
    services = _compose()["services"]
    assert set(services) == {
        "postgres",
        "s3",
        "s3-setup",
        "mlflow",
        "prefect-server",
        "prefect-setup",
        "prefect-worker",
    }
    for name, svc in services.items():
        assert svc.get("image"), f"{name} has no image"
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"

    assert "minio" in services["s3"]["image"] and services["s3"]["command"][:2] == ["server", "/data"]
    mlflow = " ".join(services["mlflow"]["command"])
    assert mlflow.startswith("exec mlflow server") and "--serve-artifacts" in mlflow
    assert '--backend-store-uri "postgresql://' in mlflow and "@postgres:5432/mlflow" in mlflow
    mlflow_env = _env_dict(services["mlflow"])
    assert mlflow_env["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    assert mlflow_env["MLFLOW_S3_ENDPOINT_URL"] == "http://s3:9000"

    server = services["prefect-server"]
    assert server["command"][:3] == ["prefect", "server", "start"]
    server_env = _env_dict(server)
    assert server_env["PREFECT_SERVER_DATABASE_DRIVER"] == "postgresql+asyncpg"
    assert server_env["PREFECT_SERVER_DATABASE_HOST"] == "postgres"

    init = (INFRA / "postgres" / "init.sql").read_text()
    for db in ("mlflow", "prefect", "optuna"):
        assert f"CREATE DATABASE {db};" in init
    assert server_env["PREFECT_SERVER_DATABASE_NAME"] == "prefect"


def test_compose_worker_runs_the_project_deployment():
    services = _compose()["services"]
    worker = services["prefect-worker"]
    cmd = worker["command"]
    assert cmd[:3] == ["prefect", "worker", "start"]
    pool = cmd[cmd.index("--pool") + 1]
    assert cmd[cmd.index("--type") + 1] == "process"
    deployments = {d["name"]: d for d in _prefect_yaml()["deployments"]}
    assert deployments["recraft-nightly"]["work_pool"]["name"] == pool
    setup = "\n".join(services["prefect-setup"]["command"])
    assert f"prefect work-pool create {pool} --type process" in setup
    assert "prefect concurrency-limit create gpu" in setup
    assert "deploy --name recraft-nightly" in setup

    env = _env_dict(worker)
    assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert env["RECRAFT_TRACKING_URI"] == "http://mlflow:5000"
    # Artifacts through the MLflow server, not into the worker's file system.
    assert env["RECRAFT_ARTIFACT_LOCATION"].startswith("mlflow-artifacts:")
    mounts = {v.rsplit(":", 1)[-1] for v in worker["volumes"]}
    assert env["RECRAFT_PROJECT_DIR"] in mounts  # prefect.yaml's pull step moves there
    assert {"GIT_AUTHOR_NAME", "GIT_COMMITTER_EMAIL"} <= set(env)  # DVC experiments are commits
    assert services["prefect-worker"]["image"] == services["prefect-setup"]["image"]
    assert services["prefect-setup"]["build"]["dockerfile"] == "infra/worker/Dockerfile"
    assert (INFRA / "worker" / "Dockerfile").exists() and (INFRA / "mlflow" / "Dockerfile").exists()


def test_compose_gpu_override_reserves_nvidia_gpus():
    override = yaml.safe_load(COMPOSE_FILES[1].read_text())["services"]
    assert set(override) <= set(_compose()["services"])
    devices = override["prefect-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


def test_compose_variables_are_in_the_env_template_and_secrets_are_required():
    example = _env_example()
    for path in COMPOSE_FILES:
        strings = list(_walk_strings(yaml.safe_load(path.read_text())))  # values, not comments
        text = "\n".join(strings)
        found = _COMPOSE_VAR.findall(text)
        assert found, f"{path.name} takes nothing from the environment"
        for name, modifier in found:
            assert name in example, f"{path.name} uses ${{{name}}}, which infra/.env.example does not list"
            if _SECRET_NAME.search(name):
                assert modifier.startswith(":?"), f"{path.name}: secret {name} must be required (${{{name}:?}})"
        bare = [value for value in strings if _BARE_VAR.search(value)]
        assert not bare, f"{path.name}: unbraced $VAR (write ${{VAR}}, or $$VAR for the container): {bare}"


def test_no_credentials_are_written_down():
    example = _env_example()
    for key, value in example.items():
        if _SECRET_NAME.search(key):
            assert value == "", f".env.example must leave {key} empty"
    for name, svc in _compose()["services"].items():
        for key, value in _env_dict(svc).items():
            if _SECRET_NAME.search(key):
                assert _COMPOSE_VAR.fullmatch(value), f"compose {name}: {key} must come from ${{{key}:?}}"
    for path in [*COMPOSE_FILES, *(INFRA / "k8s").glob("*.yaml"), TEMPLATE, ROOT / "prefect.yaml"]:
        text = path.read_text()
        for userinfo in _URL_USERINFO.findall(text):
            _, sep, password = _SUBSTITUTION.sub("<var>", userinfo).partition(":")
            assert not sep or password == "<var>", f"{path.name}: a URL with a literal password ({userinfo})"
        assert "minioadmin" not in text, f"{path.name} has MinIO's default credentials"
    for filename, doc in _k8s_docs():
        assert doc["kind"] != "Secret", f"{filename}: create Secrets from infra/.env, never commit them"
        for container in _containers(doc):
            for env in container.get("env", []):
                if _SECRET_NAME.search(env["name"]):
                    assert "value" not in env, f"{filename}: {env['name']} must come from a Secret"
                    assert env["valueFrom"]["secretKeyRef"]["name"] == "recraft-credentials"
    gitignore = (INFRA / ".gitignore").read_text().splitlines()
    assert ".env" in gitignore  # the filled-in copy stays out of git


# ---------------------------------------------------------------- kubernetes


def _containers(doc: dict) -> list[dict]:
    spec = doc.get("spec", {})
    pod = spec.get("template", {}).get("spec", {})
    return pod.get("containers", [])


def test_k8s_manifests_are_complete_and_consistent():
    kustomization = yaml.safe_load((INFRA / "k8s" / "kustomization.yaml").read_text())
    files = {p.name for p in (INFRA / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    docs = _k8s_docs()
    assert len(docs) >= 10
    example = _env_example()
    by_kind: dict[str, dict[str, dict]] = {}
    for filename, doc in docs:
        for field in ("apiVersion", "kind", "metadata"):
            assert field in doc, f"{filename}: a document without {field}"
        assert doc["metadata"].get("name"), f"{filename}: a {doc['kind']} without a name"
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    for kind in ("Deployment", "StatefulSet"):
        for name, doc in by_kind[kind].items():
            labels = doc["spec"]["template"]["metadata"]["labels"]
            assert doc["spec"]["selector"]["matchLabels"].items() <= labels.items(), name
            for container in _containers(doc):
                assert container.get("image"), f"{kind} {name}: container without an image"
                for env in container.get("env", []):
                    ref = env.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        assert ref["key"] in example, f"{name}: secret key {ref['key']} is not in .env.example"
            account = doc["spec"]["template"]["spec"].get("serviceAccountName")
            if account:
                assert account in by_kind["ServiceAccount"], f"{name}: unknown service account {account}"
    workloads = [
        d["spec"]["template"]["metadata"]["labels"] for k in ("Deployment", "StatefulSet") for d in by_kind[k].values()
    ]
    for name, svc in by_kind["Service"].items():
        assert any(svc["spec"]["selector"].items() <= labels.items() for labels in workloads), (
            f"Service {name} selects nothing"
        )
    binding = by_kind["RoleBinding"]["prefect-worker"]
    assert binding["roleRef"]["name"] in by_kind["Role"]
    assert {"create", "watch"} <= set(by_kind["Role"]["prefect-worker"]["rules"][0]["verbs"])


def test_k8s_worker_starts_gpu_jobs_from_the_job_template():
    docs = dict(((d["kind"], d["metadata"]["name"]), d) for _, d in _k8s_docs())
    worker = _containers(docs["Deployment", "prefect-worker"])[0]
    cmd = worker["command"]
    pool = cmd[cmd.index("--pool") + 1]
    assert cmd[cmd.index("--type") + 1] == "kubernetes"
    gpu_deployment = {d["name"]: d for d in _prefect_yaml()["deployments"]}["recraft-nightly-gpu"]
    assert gpu_deployment["work_pool"]["name"] == pool

    # The Jobs the worker creates request GPUs: the job template's container resources.
    template = json.loads(TEMPLATE.read_text())
    defaults = {k: v.get("default") for k, v in template["variables"]["properties"].items()}
    job = template["job_configuration"]["job_manifest"]
    assert job["kind"] == "Job" and job["apiVersion"] == "batch/v1"
    pod = job["spec"]["template"]["spec"]
    resources = pod["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == "{{ gpu_count }}"
    assert defaults["gpu_count"] >= 1
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    # The names the template defaults to exist in the manifests.
    assert ("ServiceAccount", defaults["service_account_name"]) in docs
    assert ("ConfigMap", defaults["config_map"]) in docs
    assert ("Namespace", defaults["namespace"]) in docs
    assert defaults["credentials_secret"] == "recraft-credentials"
    config = docs["ConfigMap", "recraft-config"]["data"]
    pull = gpu_deployment["pull"][0]["prefect.deployments.steps.git_clone"]
    for placeholder in (pull["repository"], pull["branch"]):
        assert placeholder.strip("{} $") in config, f"the Job's environment does not set {placeholder}"


# ---------------------------------------------------------------- job template


def _placeholders(node) -> set[str]:
    found = set()
    for text in _walk_strings(node):
        found |= {m.strip() for m in re.findall(r"{{(.*?)}}", text)}
    return found


def test_job_template_declares_every_variable_it_uses_and_renders_a_gpu_job():
    from prefect.utilities.templating import apply_values

    template = json.loads(TEMPLATE.read_text())
    assert set(template) == {"job_configuration", "variables"}
    declared = set(template["variables"]["properties"])
    used = _placeholders(template["job_configuration"])
    assert used <= declared, f"undeclared job template variables: {used - declared}"
    assert "gpu_count" in used
    gpu = template["variables"]["properties"]["gpu_count"]
    assert gpu["type"] == "integer" and gpu["minimum"] >= 1

    # Rendered as a worker would with the defaults plus the GPU deployment's job variables.
    values = {k: v["default"] for k, v in template["variables"]["properties"].items() if "default" in v}
    job_variables = {d["name"]: d for d in _prefect_yaml()["deployments"]}["recraft-nightly-gpu"]["work_pool"]
    values |= {k: v for k, v in job_variables["job_variables"].items() if k != "image"}
    values |= {"image": "registry.example/recraft:test", "name": "run-1", "env": {}, "labels": {}}
    assert set(job_variables["job_variables"]) <= declared
    rendered = apply_values(template["job_configuration"], values)
    container = rendered["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == job_variables["job_variables"]["gpu_count"]
    assert container["image"] == "registry.example/recraft:test"
    assert [e["secretRef"]["name"] for e in container["envFrom"] if "secretRef" in e] == ["recraft-credentials"]


# ---------------------------------------------------------------- prefect.yaml


def test_prefect_yaml_deploys_the_scheduled_pipeline_with_valid_schedules_and_parameters():
    from prefect import Flow
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.flows import load_flow_from_entrypoint

    config = _prefect_yaml()
    deployments = config["deployments"]
    assert {d["name"] for d in deployments} == {"recraft-nightly", "recraft-nightly-gpu"}
    pools = {"recraft-process", "recraft-k8s-gpu"}
    for dep in deployments:
        path, _, func = dep["entrypoint"].partition(":")
        flow = load_flow_from_entrypoint(f"{ROOT / path}:{func}")
        assert isinstance(flow, Flow) and flow.name == "recraft-scheduled-pipeline"
        signature = inspect.signature(flow.fn)
        assert set(dep["parameters"]) <= set(signature.parameters), dep["name"]
        assert {"task", "method"} <= set(dep["parameters"])
        flow.validate_parameters(dep["parameters"])  # types, as the server's schema checks them
        schedules = dep["schedules"]
        assert schedules and any(s.get("active", True) for s in schedules)
        for schedule in schedules:
            cron = CronSchedule(cron=schedule["cron"], timezone=schedule.get("timezone"))
            assert cron.cron == schedule["cron"]
        assert dep["work_pool"]["name"] in pools
    nightly = {d["name"]: d for d in deployments}["recraft-nightly"]
    assert nightly["concurrency_limit"]["limit"] == 1  # one DVC workspace: one run at a time


def test_prefect_yaml_pull_steps_exist_and_their_variables_are_documented():
    import importlib

    config = _prefect_yaml()
    steps = list(config["pull"]) + [s for d in config["deployments"] for s in d.get("pull", [])]
    readme = (INFRA / "README.md").read_text()
    for step in steps:
        ((fqn, kwargs),) = step.items()
        module, _, name = fqn.rpartition(".")
        func = getattr(importlib.import_module(module), name)
        assert set(kwargs) <= set(inspect.signature(func).parameters), fqn
        for var in re.findall(r"{{\s*\$(\w+)\s*}}", json.dumps(kwargs)):
            assert f"`{var}`" in readme, f"infra/README.md does not document {var}"
    for var in re.findall(r"{{\s*\$(\w+)\s*}}", json.dumps(config)):
        assert f"`{var}`" in readme, f"infra/README.md does not document {var}"
    assert "prefect concurrency-limit create gpu" in readme
    assert "prefect work-pool create recraft-k8s-gpu --type kubernetes --base-job-template" in readme


def test_prefect_yaml_parameters_validate_against_the_params_schema():
    from flows.deploy import check_parameters

    for dep in _prefect_yaml()["deployments"]:
        check_parameters(ROOT, dep["parameters"])  # a UserError naming the key otherwise


def test_the_flow_takes_only_section_key_value_overrides_so_a_server_refuses_others():
    """What a Prefect server checks, with the deployment's parameter schema, before it creates a
    run (``prefect deployment run --param``); DVC's ``FILE:key=value`` would edit another file."""
    from prefect.utilities.schema_tools import validate

    from flows.deploy import scheduled_pipeline

    schema = scheduled_pipeline.parameters.model_dump_for_openapi()
    validate({"overrides": ["fit.epochs=2", "use_tuned=true"]}, schema, raise_on_error=True)
    for bad in ("dvc.yaml:stages.fit.cmd=true", "--run-all", "fit.epochs"):
        with pytest.raises(Exception, match="does not match"):
            validate({"overrides": [bad]}, schema, raise_on_error=True)


def test_serve_refuses_bad_overrides_before_a_deployment_exists(tmp_path, monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from typer.testing import CliRunner

    from flows import deploy
    from flows.cli import app

    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    for logger in ("FLOW_RUNS", "TASK_RUNS"):  # `recraft serve` sets them; restored after the test
        monkeypatch.delenv(f"PREFECT_LOGGING_LOGGERS_PREFECT_{logger}_LEVEL", raising=False)
    served: list[dict] = []
    monkeypatch.setattr(deploy.scheduled_pipeline, "serve", lambda **kwargs: served.append(kwargs))
    cases = {
        "fit.epochs=two": "fit.epochs: must be a whole number",
        "fit.epochz=1": "fit.epochz: unknown key",
        "dvc.yaml:stages.fit.cmd=true": "dvc: unknown key",
        "fit": "not of the form section.key=value",
    }
    runner = CliRunner()
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):  # read, never contacted
        for override, phrase in cases.items():
            res = runner.invoke(app, ["serve", "--set", override])
            assert res.exit_code == 2, (override, res.output)
            lines = res.stderr.strip().splitlines()
            assert lines[0].startswith("error: ") and phrase in lines[0], (override, lines)
            assert all(line.startswith(("error: ", "hint: ")) for line in lines), lines
        assert served == []
        res = runner.invoke(app, ["serve", "--method", "nft", "--set", "fit.epochs=2"])
        assert res.exit_code == 0, res.output
    (call,) = served
    assert call["parameters"]["method"] == "nft" and call["parameters"]["overrides"] == ["fit.epochs=2"]


# ---------------------------------------------------------------- network and authentication

INGRESS_CONTROLLER = {"recraft/ingress-controller": "true"}  # the label of its namespace
# Each server: the pods (app.kubernetes.io/name) it admits, and whether the ingress controller too.
ADMITTED = {
    "mlflow": ({"recraft-flow-run"}, True),
    "prefect-server": ({"prefect-worker", "recraft-flow-run"}, True),
    "postgres": ({"mlflow", "prefect-server", "recraft-flow-run"}, False),
    "s3": ({"mlflow", "recraft-flow-run", "s3-setup"}, False),
}


def _pod_labels() -> list[dict[str, str]]:
    """The labels of every pod the manifests and the work pool's job template create."""
    labels = [
        d["spec"]["template"]["metadata"]["labels"]
        for _, d in _k8s_docs()
        if d["kind"] in ("Deployment", "StatefulSet", "Job")
    ]
    job = json.loads(TEMPLATE.read_text())["job_configuration"]["job_manifest"]
    return [*labels, job["spec"]["template"]["metadata"]["labels"]]


def test_network_policies_deny_by_default_and_admit_only_each_servers_clients():
    docs = _k8s_docs()
    policies = {d["metadata"]["name"]: d for _, d in docs if d["kind"] == "NetworkPolicy"}
    for name, policy in policies.items():
        assert policy["apiVersion"] == "networking.k8s.io/v1", name
        assert "podSelector" in policy["spec"] and policy["spec"]["policyTypes"] == ["Ingress"], name
    deny = [n for n, p in policies.items() if p["spec"]["podSelector"] == {} and not p["spec"].get("ingress")]
    assert deny, "no default-deny ingress policy (podSelector: {}, no ingress rules)"

    services = {d["metadata"]["name"]: d for _, d in docs if d["kind"] == "Service"}
    assert set(services) == set(ADMITTED), "a Service whose clients this test does not know"
    pods = _pod_labels()
    assert {"app.kubernetes.io/name": "recraft-flow-run"} in pods  # the flow-run Jobs, by the template
    for server, (clients, ingress_controller) in ADMITTED.items():
        service = services[server]
        target = next(labels for labels in pods if service["spec"]["selector"].items() <= labels.items())
        selecting = [
            p
            for p in policies.values()
            if p["spec"]["podSelector"] and p["spec"]["podSelector"]["matchLabels"].items() <= target.items()
        ]
        assert selecting, f"no NetworkPolicy selects the pods of Service {server}"
        ports = {port["targetPort"] for port in service["spec"]["ports"]}
        admitted, controller = set(), False
        for policy in selecting:
            for rule in policy["spec"].get("ingress", []):
                assert rule.get("from"), f"{server}: a rule without `from` admits every pod"
                assert rule.get("ports") and {p["port"] for p in rule["ports"]} <= ports, f"{server}: {rule}"
                for peer in rule["from"]:
                    assert set(peer) in ({"podSelector"}, {"namespaceSelector"}), f"{server}: {peer}"
                    if "podSelector" in peer:
                        selector = peer["podSelector"]
                        assert set(selector) == {"matchLabels"} and set(selector["matchLabels"]) == {
                            "app.kubernetes.io/name"
                        }, f"{server}: {peer}"
                        assert any(selector["matchLabels"].items() <= labels.items() for labels in pods), peer
                        admitted.add(selector["matchLabels"]["app.kubernetes.io/name"])
                    else:
                        assert peer["namespaceSelector"] == {"matchLabels": INGRESS_CONTROLLER}, f"{server}: {peer}"
                        controller = True
        assert admitted == clients, f"{server} admits {sorted(admitted)}, expected {sorted(clients)}"
        assert controller == ingress_controller, f"{server}: ingress controller admitted: {controller}"


def test_authentication_in_front_of_mlflow_and_prefect_is_documented():
    from importlib.metadata import entry_points

    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_SERVER_API_AUTH_STRING

    readme = (ROOT / "README.md").read_text()
    scaling = readme.split("\n## Scaling out\n", 1)[1].split("\n## ", 1)[0]
    assert "\n### Authentication" in scaling
    infra = (INFRA / "README.md").read_text()
    section = infra.split("\n## Authentication\n", 1)[1].split("\n## ", 1)[0]
    for text in (scaling, section):
        for mechanism in (
            "--app-name basic-auth",  # MLflow's basic-auth app
            "MLFLOW_TRACKING_USERNAME",
            PREFECT_SERVER_API_AUTH_STRING.name,  # Prefect server's basic auth, as pinned
            PREFECT_API_AUTH_STRING.name,
            "OAuth2 Proxy",  # or an authenticating reverse proxy at the ingress
            "basic auth",
        ):
            assert mechanism in text, mechanism
    label = "recraft/ingress-controller=true"
    assert label in scaling and label in infra and label in (INFRA / "k8s" / "network-policy.yaml").read_text()
    # What the documents name exists in what is installed and in the image.
    assert "basic-auth" in {e.name for e in entry_points(group="mlflow.app")}
    assert "mlflow[auth]" in (INFRA / "mlflow" / "Dockerfile").read_text()
