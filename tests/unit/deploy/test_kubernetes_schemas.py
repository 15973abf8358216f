"""The Kubernetes objects as `kubectl apply -k deploy/kubernetes` would send them (the
kustomization applied here in Python: there is no kustomize binary on the machine) are
valid against the Kubernetes API schemas (kubernetes-validate, strict: an unknown or
misspelt field fails), carry the labels kube-prometheus-stack selects by, and get their
model without a shared volume."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "deploy" / "kubernetes"
# the oldest Kubernetes minor still supported upstream when this was written, and the newest
# the validator knows
K8S_VERSIONS = ("1.31", "1.37")
CRD_GROUPS = ("monitoring.coreos.com/",)


def rendered() -> list[dict[str, Any]]:
    """The objects of the kustomization: resources, generated ConfigMaps, namespace,
    labels and image overrides applied the way kustomize applies them."""
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for res in kust["resources"]:
        docs += [d for d in yaml.safe_load_all((K8S / res).read_text()) if d]
    for gen in kust.get("configMapGenerator", []):
        data = {Path(f).name: (K8S / f).read_text() for f in gen["files"]}
        docs.append(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]},
             "data": data}
        )  # fmt: skip
    images = {i["name"]: f"{i['newName']}:{i['newTag']}" for i in kust.get("images", [])}
    out = []
    for doc in docs:
        doc = copy.deepcopy(doc)
        meta = doc["metadata"]
        if doc["kind"] != "Namespace":
            meta["namespace"] = kust["namespace"]
        for pairs in kust.get("labels", []):
            meta.setdefault("labels", {}).update(pairs["pairs"])
        pod = doc.get("spec", {}).get("template", {}).get("spec", {})
        for c in pod.get("initContainers", []) + pod.get("containers", []):
            c["image"] = images.get(c["image"], c["image"])
        out.append(doc)
    return out


def by_kind(kind: str) -> dict[str, Any]:
    (doc,) = [d for d in rendered() if d["kind"] == kind]
    return doc


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_validates_against_the_kubernetes_schemas(version: str) -> None:
    kv = pytest.importorskip("kubernetes_validate")
    checked = set()
    for doc in rendered():
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["apiVersion"].startswith(CRD_GROUPS):
            # Prometheus Operator CRDs are outside the validator's catalogue; checked below
            with pytest.raises(kv.SchemaNotFoundError):
                kv.validate(doc, version, strict=True)
            continue
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as exc:
            pytest.fail(f"{name} is not a valid Kubernetes {version} object: {exc.message}")
        checked.add(doc["kind"])
    assert {"StatefulSet", "Service", "ConfigMap", "PodDisruptionBudget"} <= checked


def test_monitoring_objects_are_what_kube_prometheus_stack_selects() -> None:
    for kind in ("ServiceMonitor", "PrometheusRule"):
        doc = by_kind(kind)
        assert doc["apiVersion"] == "monitoring.coreos.com/v1"
        assert doc["metadata"]["labels"].get("release"), f"{kind}: no release label"
    mon = by_kind("ServiceMonitor")["spec"]
    assert {"selector", "endpoints"} <= mon.keys() and mon["endpoints"][0]["port"] == "metrics"
    for group in by_kind("PrometheusRule")["spec"]["groups"]:
        for rule in group["rules"]:
            assert ("alert" in rule) != ("record" in rule) and rule["expr"]


def test_the_model_needs_no_shared_volume() -> None:
    """No ReadOnlyMany/ReadWriteMany claim (most block storage has neither): an init
    container copies the model image's files into an emptyDir the daemon reads."""
    docs = rendered()
    assert not [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    sts = by_kind("StatefulSet")["spec"]
    # nor one for state: it is in the changelog topic (checkpoint.store: kafka)
    assert "volumeClaimTemplates" not in sts
    pod = sts["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes["models"]
    (init,) = pod["initContainers"]
    (daemon,) = pod["containers"]
    dest = next(m for m in init["volumeMounts"] if m["name"] == "models")["mountPath"]
    read = next(m for m in daemon["volumeMounts"] if m["name"] == "models")
    assert read["readOnly"] and read["mountPath"] == dest
    assert init["command"][-1].rstrip("/") == dest
    # the model image puts the files where the init container copies them from
    dockerfile = (ROOT / "deploy" / "container" / "Dockerfile.models").read_text()
    src = init["command"][-2].rstrip(".").rstrip("/")
    assert f"COPY *.npz {src}/" in dockerfile
    # and the pipeline's model paths are in the directory the daemon reads
    cfg = yaml.safe_load((K8S / "pipeline.yaml").read_text())
    for p in cfg["pipelines"]:
        assert p["model"]["path"].startswith(dest + "/")
