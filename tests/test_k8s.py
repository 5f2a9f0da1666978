"""The Kubernetes manifests (deploy/k8s/, docs/deploy.md), checked offline: `datamesh generate`
into a copy of deploy/, every overlay built with `kubectl kustomize`, the output validated
strictly against the Kubernetes API's schemas (kubernetes-validate, K8S_VERSION) and scanned
by checkov with no failed check; the topology each registered domain gets; the secrets, which
only the files the test writes provide, and without which the production overlay does not
build; JupyterHub's values. Nothing here is applied to a cluster."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

import services
from services import DOMAINS, cli
from services.generated import generated
from shared.declarations.products import Domain
from tests.postgres import PostgresServer
from tests.test_layout import mentions

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "k8s"
OVERLAYS = ("local", "production")
K8S_VERSION = "1.33.0"  # the Kubernetes version the manifests are validated for
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
Manifest = dict[str, Any]


def _tool(name: str, *candidates: Path) -> str:
    """A command's path: an explicit candidate, else the PATH; skipped where it is missing,
    except in CI, which installs it (.ci/run) and so fails without it."""
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    if IN_CI:
        pytest.fail(f"{name} is missing in CI (.ci/run installs it)")
    pytest.skip(f"{name} is not installed here (.ci/run installs it)")


def kubectl() -> str:
    return _tool("kubectl")


def checkov() -> str:
    configured = os.environ.get("DATAMESH_CHECKOV")
    candidates = [Path(configured)] if configured else []
    return _tool("checkov", *candidates, ROOT / ".venv" / "checkov" / "bin" / "checkov")


def copy_deploy(target: Path) -> Path:
    """The committed deploy/k8s/ in target (never the generated files or secret files of this
    checkout), with `datamesh generate` run into it; the copy's deploy/k8s/."""
    ignored = {DEPLOY / "base" / "domains"} | {
        p / "secrets" for p in (DEPLOY / "overlays").iterdir()
    }
    shutil.copytree(
        DEPLOY,
        target / "deploy" / "k8s",
        ignore=lambda folder, names: [n for n in names if Path(folder) / n in ignored],
    )
    written = CliRunner().invoke(cli.cli, ["generate", "--out", str(target)])
    assert written.exit_code == 0, written.output
    return target / "deploy" / "k8s"


def write_secrets(overlay: Path, domains: tuple[str, ...], tag: str) -> set[str]:
    """The secret files an operator writes beside the overlay's generated
    secrets/kustomization.yaml, with values made for this test; the values."""
    values: dict[str, dict[str, str]] = {
        "auth.env": {"DATAMESH_JWT_SECRET": f"jwt-{tag}-" + "j" * 40},
        "pseudonym.env": {"DATAMESH_PSEUDONYM_SECRET": f"pseudonym-{tag}-" + "p" * 40},
    }
    for name in domains:
        values[f"{name}.env"] = {
            "OWNER_PASSWORD": f"owner-{name}-{tag}",
            "SERVICE_PASSWORD": f"service-{name}-{tag}",
        }
    for file, pairs in values.items():
        (overlay / "secrets" / file).write_text("".join(f"{k}={v}\n" for k, v in pairs.items()))
    return {v for pairs in values.values() for v in pairs.values()}


def build(overlay: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [kubectl(), "kustomize", str(overlay)], capture_output=True, text=True, timeout=120
    )


@dataclass
class Rendered:
    """One overlay's output: its YAML text, its resources, and the secret values written."""

    overlay: str
    text: str
    resources: list[Manifest]
    secret_values: set[str]

    def find(self, kind: str, name: str, namespace: str | None = None) -> Manifest:
        found = [
            r
            for r in self.resources
            if r["kind"] == kind
            and r["metadata"]["name"] == name
            and (namespace is None or r["metadata"].get("namespace") == namespace)
        ]
        assert len(found) == 1, f"{kind} {namespace}/{name}: {len(found)} found"
        return found[0]

    def of_kind(self, kind: str, namespace: str | None = None) -> list[Manifest]:
        return [
            r
            for r in self.resources
            if r["kind"] == kind
            and (namespace is None or r["metadata"].get("namespace") == namespace)
        ]

    def named_with_hash(self, kind: str, name: str, namespace: str) -> Manifest:
        """A generated ConfigMap or Secret: its name carries kustomize's content hash."""
        found = [
            r
            for r in self.of_kind(kind, namespace)
            if re.fullmatch(rf"{re.escape(name)}-[a-z0-9]{{10}}", r["metadata"]["name"])
        ]
        assert len(found) == 1, f"{kind} {namespace}/{name}-<hash>: {len(found)} found"
        return found[0]


def render(root: Path, domains: tuple[str, ...], overlay: str) -> Rendered:
    values = write_secrets(root / "overlays" / overlay, domains, overlay)
    built = build(root / "overlays" / overlay)
    assert built.returncode == 0, built.stderr
    resources = [r for r in yaml.safe_load_all(built.stdout) if r]
    return Rendered(overlay, built.stdout, resources, values)


@pytest.fixture(scope="module")
def deploy_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    kubectl()
    return copy_deploy(tmp_path_factory.mktemp("k8s"))


@pytest.fixture(scope="module")
def production(deploy_copy: Path) -> Rendered:
    return render(deploy_copy, DOMAINS, "production")


@pytest.fixture(scope="module")
def local(deploy_copy: Path) -> Rendered:
    return render(deploy_copy, DOMAINS, "local")


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> Rendered:
    """Each overlay in turn."""
    output: Rendered = request.getfixturevalue(request.param)
    return output


def pod_specs(rendered: Rendered) -> Iterator[tuple[Manifest, Manifest]]:
    """Every workload and its pod spec."""
    for resource in rendered.resources:
        if resource["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet"):
            yield resource, resource["spec"]["template"]["spec"]


# --- every overlay builds, validates strictly and passes checkov ------------------------------


def test_every_overlay_validates_strictly_against_the_kubernetes_api(rendered: Rendered) -> None:
    assert len(rendered.resources) > 30
    for resource in rendered.resources:
        kubernetes_validate.validate(resource, K8S_VERSION, strict=True)


def test_strict_validation_refuses_an_unknown_field(production: Rendered) -> None:
    deployment = json.loads(json.dumps(production.find("Deployment", "mesh", "mesh")))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


@pytest.mark.slow
def test_checkov_finds_no_failed_check_and_every_skip_has_its_reason(
    production: Rendered, local: Rendered, tmp_path: Path
) -> None:
    scanned = []
    annotated: set[tuple[str, str]] = set()
    for output in (production, local):
        (tmp_path / f"{output.overlay}.yaml").write_text(output.text)
        scanned += ["--file", str(tmp_path / f"{output.overlay}.yaml")]
        for resource in output.resources:
            where = f"{resource['kind']}.{resource['metadata'].get('namespace', 'default')}"
            where += f".{resource['metadata']['name']}"
            for key, value in resource["metadata"].get("annotations", {}).items():
                if key.startswith("checkov.io/skip"):
                    check, equals, reason = value.partition("=")
                    assert re.fullmatch(r"CKV2?_K8S_\d+", check) and equals, value
                    assert len(reason.split()) >= 5, f"{where}: {value} gives no reason"
                    annotated.add((check, where))
    scan = subprocess.run(
        [checkov(), *scanned, "--framework", "kubernetes", "--skip-download", "--output", "json"],
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ | {"BC_SKIP_MAPPING": "TRUE", "CKV_SKIP_PACKAGE_UPDATE_CHECK": "TRUE"},
    )
    reports = json.loads(scan.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    summary = {key: sum(r["summary"][key] for r in reports) for key in ("passed", "failed")}
    failed = [
        f"{c['check_id']} {c['resource']}: {c['check_name']}"
        for r in reports
        for c in r["results"]["failed_checks"]
    ]
    assert failed == [] and scan.returncode == 0, "\n".join(failed) or scan.stderr
    assert summary["passed"] > 500
    assert sum(r["summary"]["parsing_errors"] for r in reports) == 0
    skipped = {
        (c["check_id"], c["resource"]) for r in reports for c in r["results"]["skipped_checks"]
    }
    assert skipped == annotated  # every skip is one of the annotated ones, with its reason


# --- the topology -------------------------------------------------------------------------


def container(workload: Manifest) -> Manifest:
    containers: list[Manifest] = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(workload: Manifest) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(workload)["env"]}


def check_domain_topology(rendered: Rendered, d: Domain, package: str) -> None:
    """What a domain gets in the cluster, read from the rendered output."""
    ns = f"{d.name}-domain"
    namespace = rendered.find("Namespace", ns)
    assert namespace["metadata"]["labels"]["datamesh.io/tier"] == "domain"
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"

    accounts = {a["metadata"]["name"]: a for a in rendered.of_kind("ServiceAccount", ns)}
    assert set(accounts) == {f"{d.name}-api", f"{d.name}-postgres", f"{d.name}-migrate"}
    assert all(a["automountServiceAccountToken"] is False for a in accounts.values())

    api = rendered.find("Deployment", f"{d.name}-api", ns)
    pod = api["spec"]["template"]
    assert pod["spec"]["serviceAccountName"] == f"{d.name}-api"
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert pod["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(d.port),
        "prometheus.io/path": "/metrics",
    }
    serving = container(api)
    assert serving["command"] == [
        *("python", "-m", "shared.serving.server", f"{package}.app:app"),
        *("--host", "0.0.0.0", "--port", str(d.port)),
    ]
    assert serving["ports"] == [{"name": "http", "containerPort": d.port}]
    assert serving["readinessProbe"]["httpGet"] == {"path": f"/{d.name}/readyz", "port": "http"}
    assert serving["livenessProbe"]["httpGet"] == {"path": f"/{d.name}/healthz", "port": "http"}
    env = env_of(api)
    upper = d.name.upper()
    host = f"{d.name}-postgres.{ns}.svc.cluster.local:5432"
    # the service role, never the owner; no migration URL
    assert env[f"{upper}_DATABASE_URL"] == (
        f"postgresql://{d.name}_service:$({upper}_SERVICE_DB_PASSWORD)@{host}/{d.database}"
    )
    assert f"{upper}_MIGRATION_DATABASE_URL" not in env
    assert env[f"{upper}_SERVICE_DB_PASSWORD"]["secretKeyRef"]["key"] == "SERVICE_PASSWORD"
    assert env["DATAMESH_ENV"] == "production"
    assert {"DATAMESH_JWT_SECRET_FILE", "DATAMESH_PSEUDONYM_SECRET_FILE"} <= set(env)
    assert not {"DATAMESH_JWT_SECRET", "DATAMESH_PSEUDONYM_SECRET"} & set(env)

    service = rendered.find("Service", f"{d.name}-api", ns)
    assert service["spec"]["ports"] == [{"name": "http", "port": d.port, "targetPort": "http"}]
    labels = pod["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    autoscaler = rendered.find("HorizontalPodAutoscaler", f"{d.name}-api", ns)
    assert autoscaler["apiVersion"] == "autoscaling/v2"
    assert autoscaler["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": f"{d.name}-api",
    }
    budget = rendered.find("PodDisruptionBudget", f"{d.name}-api", ns)
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()

    database = rendered.find("StatefulSet", f"{d.name}-postgres", ns)
    assert database["spec"]["serviceName"] == f"{d.name}-postgres"
    [claim] = database["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert {m["name"] for m in container(database)["volumeMounts"]} >= {"data", "run", "tmp"}
    assert env_of(database)["POSTGRES_DB"] == d.database
    assert env_of(database)["POSTGRES_USER"] == f"{d.name}_user"
    headless = rendered.find("Service", f"{d.name}-postgres", ns)
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["ports"][0]["port"] == 5432

    job = rendered.find("Job", f"{d.name}-migrate", ns)
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == f"{d.name}-migrate"
    assert container(job)["command"][0] == "datamesh"
    assert container(job)["command"][2:] == ["--domain", d.name]
    job_env = env_of(job)
    assert job_env[f"{upper}_MIGRATION_DATABASE_URL"] == (
        f"postgresql://{d.name}_user:$({upper}_DB_PASSWORD)@{host}/{d.database}"
    )
    assert job_env[f"{upper}_DATABASE_URL"] == env[f"{upper}_DATABASE_URL"]

    policies = {p["metadata"]["name"]: p["spec"] for p in rendered.of_kind("NetworkPolicy", ns)}
    assert policies["default-deny"] == {
        "podSelector": {},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [],
        "egress": [],
    }
    component = "app.kubernetes.io/component"
    [inbound] = policies["api-ingress"]["ingress"]
    assert inbound["ports"] == [{"protocol": "TCP", "port": "http"}]
    sources = {
        (
            json.dumps(f["namespaceSelector"]["matchLabels"], sort_keys=True),
            json.dumps(f["podSelector"]["matchLabels"], sort_keys=True),
        )
        for f in inbound["from"]
    }
    assert sources == {
        ('{"kubernetes.io/metadata.name": "mesh"}', f'{{"{component}": "mesh"}}'),
        ('{"kubernetes.io/metadata.name": "analytics"}', '{"component": "singleuser-server"}'),
        (
            '{"kubernetes.io/metadata.name": "monitoring"}',
            '{"app.kubernetes.io/name": "prometheus"}',
        ),
    }
    # the API reaches its own database only (a pod selector alone: this namespace) and DNS
    api_out = policies["api-egress"]
    assert api_out["podSelector"] == {"matchLabels": {component: "api"}}
    assert api_out["egress"][0] == {
        "to": [{"podSelector": {"matchLabels": {component: "postgres"}}}],
        "ports": [{"protocol": "TCP", "port": 5432}],
    }
    assert all(p.get("port") == 53 for rule in api_out["egress"][1:] for p in rule["ports"])
    # the database: its own API and Job (this namespace), and the SQL port's readers
    database_in, sql_port = policies["postgres-ingress"]["ingress"]
    assert [f["podSelector"]["matchLabels"][component] for f in database_in["from"]] == [
        "api",
        "migrate",
    ]
    assert all(set(f) == {"podSelector"} for f in database_in["from"])
    assert [
        (f["namespaceSelector"]["matchLabels"], f["podSelector"]["matchLabels"])
        for f in sql_port["from"]
    ] == [
        ({"kubernetes.io/metadata.name": "analytics"}, {"component": "singleuser-server"}),
        ({"kubernetes.io/metadata.name": "trino"}, {"app.kubernetes.io/name": "trino"}),
    ]
    assert sql_port["ports"] == [{"protocol": "TCP", "port": 5432}]
    assert "migrate-egress" in policies and "allow-identity-provider" in policies


def test_every_domain_has_its_namespace_database_api_and_policies(rendered: Rendered) -> None:
    for d in services.registered():
        check_domain_topology(rendered, d, services.package(d.name))


def test_the_mesh_reads_every_domain_at_its_in_cluster_address(rendered: Rendered) -> None:
    mesh = rendered.find("Deployment", "mesh", "mesh")
    assert container(mesh)["command"][3:] == [
        *("services.federation.app:app", "--host", "0.0.0.0", "--port", "8000"),
    ]
    assert container(mesh)["readinessProbe"]["httpGet"]["path"] == "/mesh/readyz"
    assert container(mesh)["livenessProbe"]["httpGet"]["path"] == "/mesh/healthz"
    reference = env_of(mesh)["MESH_DOMAINS"]["configMapKeyRef"]
    registry = rendered.named_with_hash("ConfigMap", "mesh-domains", "mesh")
    assert reference == {"name": registry["metadata"]["name"], "key": "MESH_DOMAINS"}
    assert json.loads(registry["data"]["MESH_DOMAINS"]) == {
        d.name: f"http://{d.name}-api.{d.name}-domain.svc.cluster.local:{d.port}"
        for d in services.registered()
    }
    assert not any(name.endswith("_DATABASE_URL") for name in env_of(mesh))
    for kind in ("Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceAccount"):
        rendered.find(kind, "mesh", "mesh")
    policies = {p["metadata"]["name"] for p in rendered.of_kind("NetworkPolicy", "mesh")}
    assert policies == {"default-deny", "mesh-ingress", "mesh-egress", "allow-identity-provider"}
    assert {n["metadata"]["name"] for n in rendered.of_kind("Namespace")} == {
        "mesh",
        "analytics",
        *(f"{name}-domain" for name in DOMAINS),
    }
    assert rendered.find("NetworkPolicy", "default-deny", "analytics")["spec"]["podSelector"] == {}


def test_a_new_domain_gets_the_same_topology(tmp_path: Path) -> None:
    """Registering a domain is enough: its manifests come from its declaration."""
    root = copy_deploy(tmp_path)
    finance = Domain(
        name="finance",
        title="Finance",
        description="Invoices",
        owner="finance-team@example.com",
        update_frequency="daily",
        data_classification="confidential",
        database="finance_db",
        port=8003,
    )
    domains = (*services.registered(), finance)
    packages = {name: services.package(name) for name in DOMAINS} | {"finance": "finance_domain"}
    for path, content in generated(domains, packages).items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(content)
    output = render(root, (*DOMAINS, "finance"), "production")
    check_domain_topology(output, finance, "finance_domain")
    registry = output.named_with_hash("ConfigMap", "mesh-domains", "mesh")
    assert json.loads(registry["data"]["MESH_DOMAINS"])["finance"] == (
        "http://finance-api.finance-domain.svc.cluster.local:8003"
    )


def test_prometheus_scrapes_every_service_as_job_datamesh_with_its_service_label(
    production: Rendered,
) -> None:
    """deploy/k8s/monitoring/prometheus-values.yaml keeps the annotated pods of DataMesh and
    labels each target with its pod's datamesh.io/service, as deploy/prometheus/rules.yml
    expects of `up{job="datamesh"}`."""
    values = yaml.safe_load((DEPLOY / "monitoring" / "prometheus-values.yaml").read_text())
    [job] = values["prometheus"]["prometheusSpec"]["additionalScrapeConfigs"]
    assert (job["job_name"], job["honor_labels"]) == ("datamesh", True)
    relabel = {
        tuple(r["source_labels"]): r.get("target_label", r.get("action"))
        for r in job["relabel_configs"]
    }
    assert relabel[("__meta_kubernetes_pod_label_app_kubernetes_io_part_of",)] == "keep"
    assert relabel[("__meta_kubernetes_pod_annotation_prometheus_io_scrape",)] == "keep"
    assert relabel[("__meta_kubernetes_pod_label_datamesh_io_service",)] == "service"
    scraped = {}
    for workload, _ in pod_specs(production):
        template = workload["spec"]["template"]["metadata"]
        if template.get("annotations", {}).get("prometheus.io/scrape") == "true":
            assert template["labels"]["app.kubernetes.io/part-of"] == "datamesh"
            port = int(template["annotations"]["prometheus.io/port"])
            assert port == container(workload)["ports"][0]["containerPort"]
            assert template["annotations"]["prometheus.io/path"] == "/metrics"
            scraped[template["labels"]["datamesh.io/service"]] = port
    assert scraped == {"mesh": 8000} | {d.name: d.port for d in services.registered()}
    rules = (ROOT / "deploy" / "prometheus" / "rules.yml").read_text()
    assert 'up{job="datamesh"}' in rules and "by (service)" in rules
    [source] = values["grafana"]["additionalDataSources"]
    dashboard = (ROOT / "deploy" / "grafana" / "dashboards" / "operations.json").read_text()
    assert f'"uid": "{source["uid"]}"' in dashboard


# --- hardening ----------------------------------------------------------------------------


def test_every_container_is_hardened_limited_and_pinned(rendered: Rendered) -> None:
    workloads = list(pod_specs(rendered))
    assert len(workloads) == 1 + 3 * len(DOMAINS)
    for workload, spec in workloads:
        name = f"{workload['kind']} {workload['metadata']['name']}"
        assert spec["automountServiceAccountToken"] is False, name
        assert spec["serviceAccountName"] not in ("", "default"), name
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] > 0, name
        for each in spec["containers"] + spec.get("initContainers", []):
            assert each["securityContext"] == {
                "runAsNonRoot": True,
                "readOnlyRootFilesystem": True,
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"},
            }, name
            for bound in ("requests", "limits"):
                assert set(each["resources"][bound]) == {"cpu", "memory"}, name
            image = each["image"]
            assert "@sha256:" in image or re.fullmatch(r"[^:]+:[\w][\w.-]*", image), image
            assert not image.endswith(":latest"), image
            # a read-only root: whatever the process writes goes to a mounted volume
            assert "/tmp" in {m["mountPath"] for m in each["volumeMounts"]}, name
        for volume in spec.get("volumes", []):
            source = volume.get("secret") or volume.get("projected")
            if source:  # secret files: the pod's user and group only
                assert source["defaultMode"] == 0o440, name


def test_each_overlay_names_its_images_and_runs_its_migrations(
    production: Rendered, local: Rendered
) -> None:
    def images(output: Rendered) -> set[str]:
        return {c["image"] for _, spec in pod_specs(output) for c in spec["containers"]}

    assert images(production) == {
        "registry.example.com/datamesh/datamesh:0.1.0",
        "postgres:17.6-bookworm",
    }
    assert images(local) == {"datamesh:0.1.0-local", "postgres:17.6-bookworm"}
    for name in DOMAINS:
        # production migrates and grants the service role, no sample data; local loads it
        job = f"{name}-migrate"
        assert container(production.find("Job", job))["command"][:2] == ["datamesh", "migrate"]
        assert container(local.find("Job", job))["command"][:2] == ["datamesh", "load-sample"]
    assert all(
        c["imagePullPolicy"] == "Always" for _, s in pod_specs(production) for c in s["containers"]
    )
    autoscalers = production.of_kind("HorizontalPodAutoscaler")
    assert {a["spec"]["minReplicas"] for a in autoscalers} == {2}
    assert {a["spec"]["minReplicas"] for a in local.of_kind("HorizontalPodAutoscaler")} == {1}
    # production trusts the identity provider's tokens, and may reach it
    for deployment in production.of_kind("Deployment"):
        assert env_of(deployment)["DATAMESH_JWKS_URL"].startswith("https://")
        assert "DATAMESH_JWKS_URL" not in env_of(local.find("Deployment", **_named(deployment)))
    for policy in production.resources:
        if (
            policy["kind"] == "NetworkPolicy"
            and policy["metadata"]["name"] == "allow-identity-provider"
        ):
            assert any("ipBlock" in to for rule in policy["spec"]["egress"] for to in rule["to"])


def _named(resource: Manifest) -> dict[str, str]:
    return {"name": resource["metadata"]["name"], "namespace": resource["metadata"]["namespace"]}


# --- secrets ------------------------------------------------------------------------------


def test_every_secret_comes_from_the_files_the_test_wrote(rendered: Rendered) -> None:
    secrets = rendered.of_kind("Secret")
    assert {
        (s["metadata"]["namespace"], s["metadata"]["name"].rsplit("-", 1)[0]) for s in secrets
    } == {
        ("mesh", "datamesh-auth"),
        *(
            (f"{n}-domain", s)
            for n in DOMAINS
            for s in ("datamesh-auth", "datamesh-pseudonym", "database")
        ),
    }
    for secret in secrets:
        assert "stringData" not in secret
        for value in secret["data"].values():
            assert base64.b64decode(value).decode() in rendered.secret_values
    # the mesh holds the token secret only; each domain its own database's passwords
    mesh_secret = rendered.named_with_hash("Secret", "datamesh-auth", "mesh")
    assert set(mesh_secret["data"]) == {"DATAMESH_JWT_SECRET"}
    for name in DOMAINS:
        database = rendered.named_with_hash("Secret", "database", f"{name}-domain")
        values = {base64.b64decode(v).decode() for v in database["data"].values()}
        assert values == {f"owner-{name}-{rendered.overlay}", f"service-{name}-{rendered.overlay}"}


def test_no_committed_file_holds_a_secret_or_names_a_domain() -> None:
    committed = subprocess.run(
        ["git", "ls-files", "--", "deploy/k8s"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert committed, "deploy/k8s/ is committed"
    for path in committed:
        text = (ROOT / path).read_text()
        assert not mentions(text, DOMAINS), f"{path} names a domain: generate it instead"
        for document in yaml.safe_load_all(text):
            if isinstance(document, dict):
                assert document.get("kind") != "Secret", path
                for generator in document.get("secretGenerator", []):
                    assert "literals" not in generator, path
    assert not [p for p in committed if "/secrets/" in p]


def test_the_production_overlay_refuses_to_build_without_its_secret_files(
    tmp_path: Path,
) -> None:
    root = copy_deploy(tmp_path)
    overlay = root / "overlays" / "production"
    refused = build(overlay)
    assert refused.returncode != 0
    assert "auth.env" in refused.stderr
    write_secrets(overlay, DOMAINS, "production")
    assert build(overlay).returncode == 0
    (overlay / "secrets" / f"{DOMAINS[-1]}.env").unlink()  # one domain's passwords missing
    refused = build(overlay)
    assert refused.returncode != 0
    assert f"{DOMAINS[-1]}.env" in refused.stderr
    shutil.rmtree(root / "base" / "domains")  # `datamesh generate` not run
    assert build(overlay).returncode != 0


# --- the migration Job's command ----------------------------------------------------------


def test_migrate_names_an_unknown_domain() -> None:
    for command in ("migrate", "load-sample"):
        refused = CliRunner().invoke(cli.cli, [command, "--domain", "nowhere"])
        assert refused.exit_code == 2
        assert "'nowhere' is not a domain; known:" in refused.output


def test_the_migration_job_migrates_and_creates_the_service_role_without_sample_data(
    postgres_servers: dict[str, PostgresServer],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """`datamesh migrate --domain D` with the Job's two URLs, on one domain's database only:
    the schema at every head, the service's role created with its URL's password and granted,
    and no row loaded."""
    import asyncio

    from shared.storage.db import connect

    name = DOMAINS[0]
    d = services.domain(name)
    server = postgres_servers[name]
    server.ensure_database(f"{name}_k8s")
    service_url = server.url(f"{name}_k8s", f"{name}_k8s_service")
    for other in DOMAINS:  # only its own domain's variables, as in its namespace
        monkeypatch.delenv(f"{other.upper()}_DATABASE_URL", raising=False)
        monkeypatch.delenv(f"{other.upper()}_MIGRATION_DATABASE_URL", raising=False)
    monkeypatch.setenv(f"{name.upper()}_DATABASE_URL", service_url)
    monkeypatch.setenv(f"{name.upper()}_MIGRATION_DATABASE_URL", server.url(f"{name}_k8s"))
    # the rest of the Job's environment (services/generated.py _process_env)
    monkeypatch.setenv("DATAMESH_ENV", "production")
    monkeypatch.setenv("DATAMESH_DATA_DIR", str(tmp_path / "none"))
    migrated = CliRunner().invoke(cli.cli, ["migrate", "--domain", name])
    assert migrated.exit_code == 0, migrated.output
    assert migrated.output.startswith(f"{name}: migrated to ")
    assert not (tmp_path / "none").exists()  # no embedded server for any other domain

    async def check() -> None:
        conn = await connect(service_url)
        try:
            assert await conn.fetchval("SELECT current_user") == f"{name}_k8s_service"
            for product in d.products:
                if product.is_table:
                    assert await conn.fetchval(f'SELECT count(*) FROM "{product.source}"') == 0
        finally:
            await conn.close()

    asyncio.run(check())


# --- JupyterHub ---------------------------------------------------------------------------

VALUES = DEPLOY / "jupyterhub" / "values.yaml"


class _Section(dict[str, Any]):
    def __getattr__(self, name: str) -> Any:
        return self.setdefault(name, _Section())

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value


class _Spawner:
    def __init__(self) -> None:
        self.environment = {"DATAMESH_URL": "http://mesh.mesh.svc.cluster.local:8000"}


def _token_hook() -> Any:
    """The hub's extraConfig run as the chart runs it (exec with `c`), and the hook it sets."""
    values = yaml.safe_load(VALUES.read_text())
    c = _Section()
    for source in values["hub"]["extraConfig"].values():
        exec(compile(source, str(VALUES), "exec"), {"c": c})
    return c.Spawner.auth_state_hook


def test_each_users_server_gets_their_own_access_token() -> None:
    hook = _token_hook()
    spawner = _Spawner()
    shared = spawner.environment
    hook(spawner, {"access_token": "the-users-token", "refresh_token": "kept-in-the-hub"})
    assert spawner.environment == {
        "DATAMESH_URL": "http://mesh.mesh.svc.cluster.local:8000",
        "DATAMESH_TOKEN": "the-users-token",
    }
    assert "DATAMESH_TOKEN" not in shared  # the configured environment is not changed
    for state in (None, {}, {"access_token": ""}):
        with pytest.raises(RuntimeError, match="No access token for the mesh"):
            hook(_Spawner(), state)


def test_jupyterhub_logs_in_with_oidc_and_reaches_only_the_mesh_and_the_apis(
    production: Rendered,
) -> None:
    values = yaml.safe_load(VALUES.read_text())
    hub = values["hub"]
    assert hub["config"]["JupyterHub"]["authenticator_class"] == "generic-oauth"
    assert hub["config"]["Authenticator"]["enable_auth_state"] is True
    oauth = hub["config"]["GenericOAuthenticator"]
    assert "client_secret" not in oauth and hub["existingSecret"]
    assert all(
        oauth[u].startswith("https://") for u in ("authorize_url", "token_url", "userdata_url")
    )
    singleuser = values["singleuser"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", singleuser["image"]["tag"])
    # the URL it is given is the mesh's Service
    mesh = production.find("Service", "mesh", "mesh")
    assert singleuser["extraEnv"]["DATAMESH_URL"] == (
        f"http://mesh.mesh.svc.cluster.local:{mesh['spec']['ports'][0]['port']}"
    )
    # its egress selects the labels the manifests carry, on the ports named http
    apis, sql_port = singleuser["networkPolicy"]["egress"]
    targets = {
        (
            t["namespaceSelector"]["matchLabels"]["datamesh.io/tier"],
            t["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
        )
        for t in apis["to"]
    }
    assert targets == {("mesh", "mesh"), ("domain", "api")}
    assert apis["ports"] == [{"protocol": "TCP", "port": "http"}]
    [databases] = sql_port["to"]
    assert databases["namespaceSelector"]["matchLabels"] == {"datamesh.io/tier": "domain"}
    assert databases["podSelector"]["matchLabels"] == {"app.kubernetes.io/component": "postgres"}
    assert sql_port["ports"] == [{"protocol": "TCP", "port": 5432}]
    for namespace in production.of_kind("Namespace"):
        tier = namespace["metadata"]["labels"]["datamesh.io/tier"]
        pods = {
            container_labels["app.kubernetes.io/component"]
            for w, _ in pod_specs(production)
            if w["metadata"]["namespace"] == namespace["metadata"]["name"]
            for container_labels in [w["spec"]["template"]["metadata"]["labels"]]
        }
        if tier == "mesh":
            assert "mesh" in pods
        elif tier == "domain":
            assert "api" in pods
    assert singleuser["networkPolicy"]["egressAllowRules"]["privateIPs"] is False
    assert singleuser["cloudMetadata"]["blockWithIptables"] is False


def _merged(defaults: Any, values: Any) -> Any:
    """Helm's merge of the chart's values with ours: maps merge, anything else replaces."""
    if isinstance(defaults, dict) and isinstance(values, dict):
        return {
            k: _merged(defaults.get(k), values[k]) if k in values else defaults[k]
            for k in defaults | values
        }
    return values


def test_the_values_match_the_charts_schema() -> None:
    """Against the chart's values.schema.yaml, as `helm install` checks them: only where
    DATAMESH_Z2JH_CHART names the chart's folder (jupyterhub/ of the chart's repository, at the
    tag of the version in values.yaml), which is not committed here."""
    import jsonschema

    chart = os.environ.get("DATAMESH_Z2JH_CHART")
    if not chart:
        pytest.skip(
            "DATAMESH_Z2JH_CHART is not set (the chart's folder: values.yaml, values.schema.yaml)"
        )
    folder = Path(chart)
    schema = yaml.safe_load((folder / "values.schema.yaml").read_text())
    defaults = yaml.safe_load((folder / "values.yaml").read_text())
    merged = _merged(defaults, yaml.safe_load(VALUES.read_text()))
    errors = [
        f"{list(e.path)}: {e.message}"
        for e in jsonschema.Draft7Validator(schema).iter_errors(merged)
    ]
    assert errors == []


def test_the_singleuser_image_is_a_stage_of_the_dockerfile() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "FROM jupyter AS singleuser" in dockerfile
    assert "'/app[singleuser]'" in dockerfile
    assert 'CMD ["jupyterhub-singleuser"]' in dockerfile
