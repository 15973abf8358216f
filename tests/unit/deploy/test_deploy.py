"""What operators deploy agrees with the daemon: manifests parse and reference each other,
probes, ports and grace periods match the daemon's, every metric the rules and the
dashboard use is one the daemon exports, the rules pass promtool's unit tests."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry, generate_latest

from streamlstm.service.config.types import DEFAULT_METRICS_PORT
from streamlstm.service.metrics import InAlert, Metrics, PipelineStatus
from tests.conftest import require_binary

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
RULES = DEPLOY / "prometheus" / "streamlstm-rules.yml"
DASHBOARD = DEPLOY / "grafana" / "streamlstm-dashboard.json"


def manifests() -> dict[tuple[str, str], dict]:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    out = {}
    for res in kust["resources"]:
        path = K8S / res
        assert path.exists(), f"kustomization lists {res}, which does not exist"
        for doc in yaml.safe_load_all(path.read_text()):
            out[(doc["kind"], doc["metadata"]["name"])] = doc
    for gen in kust.get("configMapGenerator", []):
        for f in gen["files"]:
            assert (K8S / f).exists(), f"configMapGenerator file {f} does not exist"
        out[("ConfigMap", gen["name"])] = {"kind": "ConfigMap", "metadata": {"name": gen["name"]}}
    return out


def pod_spec() -> dict:
    return manifests()[("StatefulSet", "streamlstm")]["spec"]["template"]["spec"]


def k8s_pipeline() -> dict:
    return yaml.safe_load((K8S / "pipeline.yaml").read_text())


def test_every_manifest_parses_and_references_exist():
    m = manifests()
    sts = m[("StatefulSet", "streamlstm")]
    spec = sts["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in spec["selector"]["matchLabels"].items())
    pod = spec["template"]["spec"]
    assert ("ServiceAccount", pod["serviceAccountName"]) in m
    for vol in pod["volumes"]:
        if "configMap" in vol:
            assert ("ConfigMap", vol["configMap"]["name"]) in m
        if "persistentVolumeClaim" in vol:
            assert ("PersistentVolumeClaim", vol["persistentVolumeClaim"]["claimName"]) in m
    mounts = {vm["name"] for c in pod["containers"] for vm in c["volumeMounts"]}
    declared = {v["name"] for v in pod["volumes"]} | {
        t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])
    }
    assert mounts <= declared
    svc = m[("Service", "streamlstm")]
    assert spec["serviceName"] == "streamlstm"
    assert all(labels.get(k) == v for k, v in svc["spec"]["selector"].items())
    mon = m[("ServiceMonitor", "streamlstm")]
    assert all(
        svc["metadata"]["labels"].get(k) == v
        for k, v in mon["spec"]["selector"]["matchLabels"].items()
    )
    assert {e["port"] for e in mon["spec"]["endpoints"]} <= {
        p["name"] for p in svc["spec"]["ports"]
    }
    pdb = m[("PodDisruptionBudget", "streamlstm")]
    assert all(labels.get(k) == v for k, v in pdb["spec"]["selector"]["matchLabels"].items())


def test_probes_ports_and_grace_agree_with_the_daemon():
    pod = pod_spec()
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    cfg = k8s_pipeline()
    assert ports["metrics"] == cfg["metrics"]["port"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert pod["terminationGracePeriodSeconds"] > cfg["service"]["shutdown_grace_s"]
    assert container["args"][:2] == ["run", "--config"]
    assert container["args"][2].startswith("/etc/streamlstm/")
    mount = next(v for v in container["volumeMounts"] if v["name"] == "config")
    assert container["args"][2] == f"{mount['mountPath']}/pipeline.yaml"
    env = {e["name"]: e for e in container["env"]}
    assert cfg["kafka"]["sasl_password_env"] in env
    # Every ${VAR} of pipeline.yaml comes from the container's env; the static member id
    # is the pod's own (stable) name.
    for var in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", (K8S / "pipeline.yaml").read_text()):
        assert var in env, f"pipeline.yaml reads ${{{var}}}, the container does not set it"
    assert cfg["kafka"]["group_instance_id"] == "${POD_NAME}"
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_kubernetes_state_lives_in_kafka_not_on_pod_volumes():
    """The shipped cluster shape: every pipeline checkpoints to its changelog topic, no
    pod has a volume claim (any replica restores any partition), the only writable
    volumes are emptyDirs, and the disruption budget leaves replicas running."""
    cfg = k8s_pipeline()
    for p in cfg["pipelines"]:
        assert p["checkpoint"]["store"] == "kafka", p["name"]
        assert "dir" not in p["checkpoint"], "store: kafka writes no file"
    assert cfg["kafka"]["assignment"] == "group"
    m = manifests()
    assert not [k for k in m if k[0] == "PersistentVolumeClaim"]
    spec = m[("StatefulSet", "streamlstm")]["spec"]
    assert "volumeClaimTemplates" not in spec
    pod = spec["template"]["spec"]
    for vol in pod["volumes"]:
        assert "persistentVolumeClaim" not in vol and "hostPath" not in vol, vol["name"]
        assert "emptyDir" in vol or "configMap" in vol, vol["name"]
    (container,) = pod["containers"]
    writable = {v["name"] for v in container["volumeMounts"] if not v.get("readOnly")}
    assert all("emptyDir" in v for v in pod["volumes"] if v["name"] in writable)
    assert spec["replicas"] >= 2
    pdb = m[("PodDisruptionBudget", "streamlstm")]["spec"]
    assert pdb.get("maxUnavailable", 0) == 1 or pdb["minAvailable"] < spec["replicas"]


def test_kubernetes_pipeline_config_is_valid(monkeypatch):
    from streamlstm.service.config import parse_config

    monkeypatch.setenv("KAFKA_PASSWORD", "from-the-secret")
    monkeypatch.setenv("POD_NAME", "streamlstm-1")
    cfg = parse_config(k8s_pipeline(), source=str(K8S / "pipeline.yaml"))
    assert cfg.metrics.port == DEFAULT_METRICS_PORT
    assert cfg.pipelines[0].kafka.group_instance_id == "streamlstm-1"


def test_one_metrics_port_everywhere_and_not_an_allocated_one():
    """The default port (types.DEFAULT_METRICS_PORT) is the one every deploy file and
    document uses, and not a port the Prometheus port list gives another exporter."""
    port = DEFAULT_METRICS_PORT
    # graphite_exporter's pair, and the rest of the fully allocated exporter range
    assert port not in range(9090, 10000)
    assert port not in (10050, 10051) and port not in range(10248, 10261)  # Zabbix, kubelet
    m = manifests()
    (container,) = pod_spec()["containers"]
    assert {p["containerPort"] for p in container["ports"]} == {port}
    assert {p["port"] for p in m[("Service", "streamlstm")]["spec"]["ports"]} == {port}
    docker = (DEPLOY / "container" / "Dockerfile").read_text()
    assert f"EXPOSE {port}\n" in docker and f"127.0.0.1:{port}/healthz" in docker
    assert f'"localhost:{port}"' in (DEPLOY / "prometheus" / "prometheus.yml").read_text()
    assert f"port: {port}" in (ROOT / "config" / "pipeline.yaml").read_text()
    stale = [
        str(f.relative_to(ROOT))
        for f in [ROOT / "README.md", *ROOT.glob("config/*.yaml"), *DEPLOY.rglob("*.*")]
        if f.is_file() and "9108" in f.read_text(errors="replace")
    ]
    assert not stale, f"the old port 9108 is still in {stale}"


def test_monitoring_objects_carry_the_release_label_kube_prometheus_stack_selects():
    m = manifests()
    for kind in ("ServiceMonitor", "PrometheusRule"):
        labels = m[(kind, "streamlstm")]["metadata"].get("labels", {})
        assert labels.get("release"), f"{kind} has no release label: kube-prometheus-stack skips it"


def test_systemd_credentials_are_created_by_the_documented_steps():
    import re

    unit = (DEPLOY / "systemd" / "streamlstm.service").read_text()
    guide = (DEPLOY / "README.md").read_text()
    for src in re.findall(r"^LoadCredential=[^:]+:(\S+)$", unit, re.M):
        assert f"/dev/null {src}" in guide, f"no install step creates {src}"
    assert "pip install streamlstm\n" not in unit  # not on PyPI
    assert "Documentation=file://" not in unit


def test_prometheusrule_is_built_from_the_rules_file():
    generated = subprocess.run(
        [sys.executable, str(K8S / "make_prometheusrule.py")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert (K8S / "prometheusrule.yaml").read_text() == generated, (
        "deploy/kubernetes/prometheusrule.yaml is stale: "
        "python deploy/kubernetes/make_prometheusrule.py > deploy/kubernetes/prometheusrule.yaml"
    )


def test_systemd_stop_timeout_above_grace_and_verify():
    unit = (DEPLOY / "systemd" / "streamlstm.service").read_text()
    assert "Type=notify" in unit and "WatchdogSec=" in unit and "Restart=on-failure" in unit
    stop = int(re.search(r"^TimeoutStopSec=(\d+)", unit, re.M).group(1))
    assert stop > 20  # DEFAULT shutdown_grace_s
    analyze = require_binary("systemd-analyze")  # .ci/run installs Debian's systemd
    exe = shutil.which("streamlstm") or str(Path(sys.executable).with_name("streamlstm"))
    tmp = Path(subprocess.run(["mktemp", "-d"], capture_output=True, text=True).stdout.strip())
    (tmp / "streamlstm.service").write_text(unit.replace("/opt/streamlstm/bin/streamlstm", exe))
    res = subprocess.run(
        [analyze, "verify", str(tmp / "streamlstm.service")], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr


def exported_metric_names() -> set[str]:
    """Every series name the daemon's /metrics can show (a status with everything set)."""
    registry = CollectorRegistry()
    m = Metrics(registry, max_alert_series=5)
    m.init_pipeline("p", ["ok", "too_old"])
    m.publish(
        PipelineStatus(
            pipeline="p", live_streams=3, in_alert=[InAlert("k", 0, 0.9999)], lag={("t", 0): 5},
            last_checkpoint=0.0, model={"cell": "lstm"}, assigned=1, broker_up=True, ready=True,
        )
    )  # fmt: skip
    m.score.observe_many(["p"], [0.5])
    m.latency.observe_many(["p"], [0.01])
    m.event_lag.observe_many(["p"], [1.0])
    m.dead_letters.labels("p", "not_json").inc()
    m.broker_errors.labels("p", "poll").inc()
    m.model_reloads.labels("p", "ok").inc()
    m.batch_seconds.labels("p").observe(0.01)
    m.checkpoint_seconds.labels("p").observe(0.1)
    text = generate_latest(registry).decode()
    names = {
        line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and line[0] != "#"
    }
    # a histogram is named by its base name too (in runbooks and docs)
    return names | {n[: -len("_bucket")] for n in names if n.endswith("_bucket")}


def used_metric_names(text: str) -> set[str]:
    return set(re.findall(r"\b(streamlstm_[a-z_]+)", text))


def test_rules_and_dashboard_use_only_exported_metrics():
    exported = exported_metric_names()
    used = used_metric_names(RULES.read_text()) | used_metric_names(DASHBOARD.read_text())
    missing = sorted(used - exported)
    assert not missing, f"not exported by the daemon: {missing}"
    assert "streamlstm_stream_alert_score" in used and "streamlstm_events_total" in used


def test_dashboard_is_valid_grafana_json():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["panels"] and all(p["targets"] for p in dash["panels"])
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for topic in ("throughput", "lag", "alert", "score", "evicted", "checkpoint", "dead letters"):
        assert topic in titles


def test_promtool_rule_unit_tests():
    promtool = require_binary("promtool")
    check = subprocess.run(
        [promtool, "check", "rules", "--lint=all", "--lint-fatal", str(RULES)],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    tests = sorted((DEPLOY / "prometheus" / "tests").glob("*.yml"))
    assert {t.name for t in tests} >= {"streamlstm-rules-test.yml", "streamlstm-storm-test.yml"}
    res = subprocess.run(
        [promtool, "test", "rules", *map(str, tests)], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stdout + res.stderr


def alert_rules() -> dict[str, dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


def test_no_per_stream_alert_pages():
    """Pages are per pipeline: an alert keyed by stream is a ticket, waits out a brief
    excursion and holds through a short gap; the fleet budget is the only anomaly page."""
    rules = alert_rules()
    per_stream = [r for r in rules.values() if "streamlstm_stream_alert_score" in r["expr"]]
    assert per_stream
    for r in per_stream:
        assert r["labels"]["severity"] != "page", r["alert"]
        assert r.get("for") and r.get("keep_firing_for"), r["alert"]
    fleet = rules["StreamlstmFleetAnomalyRateHigh"]
    assert fleet["labels"]["severity"] == "page"
    # counts every open alert, past the max_alert_series cap, and one alert per pipeline
    assert "streamlstm_streams_in_alert" in fleet["expr"]
    assert "sum by (pipeline)" in fleet["expr"]
    assert {r["labels"]["severity"] for r in rules.values()} == {"page", "ticket"}


def test_storm_test_has_500_streams_of_one_pipeline():
    text = (DEPLOY / "prometheus" / "tests" / "streamlstm-storm-test.yml").read_text()
    streams = set(re.findall(r'pipeline="sensors",stream="([^"]+)"', text))
    assert len(streams) >= 500


ALERTMANAGER = DEPLOY / "prometheus" / "alertmanager.yml"


def amtool_route(amtool: str, *labels: str) -> str:
    res = subprocess.run(
        [amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout.strip()


def test_alertmanager_example_is_valid_and_routes_page_and_ticket_apart():
    amtool = require_binary("amtool")
    check = subprocess.run(
        [amtool, "check-config", str(ALERTMANAGER)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    rules = alert_rules()
    for name, rule in rules.items():
        want = "pager" if rule["labels"]["severity"] == "page" else "tickets"
        got = amtool_route(
            amtool, f"alertname={name}", f"severity={rule['labels']['severity']}", "pipeline=p"
        )
        assert got == want, f"{name} goes to {got}, expected {want}"
    cfg = yaml.safe_load(ALERTMANAGER.read_text())
    for route in cfg["route"]["routes"]:
        assert "pipeline" in route.get("group_by", cfg["route"]["group_by"])
    pager = next(r for r in cfg["route"]["routes"] if r["receiver"] == "pager")
    streams = next(r for r in cfg["route"]["routes"] if "StreamlstmStreamAnomalous" in str(r))
    assert streams["group_by"] == ["pipeline"]  # every stream of a pipeline, one notification
    for route in (cfg["route"], pager, streams):
        assert {"group_wait", "group_interval", "repeat_interval"} <= route.keys()
    for inhibit in cfg["inhibit_rules"]:
        for m in inhibit["source_matchers"] + inhibit["target_matchers"]:
            name = re.fullmatch(r'alertname="(\w+)"', m)
            assert name is None or name.group(1) in rules, f"inhibit rule names no rule: {m}"


# The steps of deploy/README.md §2a that cannot run in a test, and what stands in for them.
SYSTEMD_STEPS_NOT_RUN = {
    "useradd": "creates a system user on the host; User=/Group= name it",
    "python3.11": "the venv; pip's [project.scripts] entry makes bin/streamlstm (checked)",
    "/opt/streamlstm/bin/pip": "installs the checkout; the test links this venv's streamlstm",
    "vi": "edits the password file the step before it created",
    "systemctl": "needs systemd as PID 1; systemd-analyze verify stands in",
    "journalctl": "reads the journal of a running unit",
}


def test_systemd_steps_create_every_file_the_unit_names(tmp_path: Path) -> None:
    """deploy/README.md §2a, run as written under a scratch root (every absolute path
    moved under it): the coreutils steps run; the others are listed above. Then every
    path the unit names exists, is optional ('-'), or is made by systemd itself
    (StateDirectory=), and the unit, pointed at that root, passes systemd-analyze verify."""
    from tests import documented

    analyze = require_binary("systemd-analyze")
    guide = (DEPLOY / "README.md").read_text()
    steps = documented.block_after(guide, "## 2a. systemd")
    root = tmp_path / "root"
    (root / "etc" / "systemd" / "system").mkdir(parents=True)
    (tmp_path / "pipeline.yaml").write_text((ROOT / "config" / "pipeline.yaml").read_text())

    def rooted(word: str) -> str:
        if word.startswith("/") and word != "/dev/null":
            return str(root) + word
        if word.startswith("deploy/"):
            return str(ROOT / word)
        return word

    ran = []
    for cmd in steps:
        argv = cmd.split()
        if argv[0] in SYSTEMD_STEPS_NOT_RUN:
            continue
        assert argv[0] == "install", f"a new kind of step: {cmd}; run it or list it"
        res = subprocess.run([rooted(w) for w in argv], cwd=tmp_path, capture_output=True,
                             text=True)  # fmt: skip
        assert res.returncode == 0, (cmd, res.stderr)
        ran.append(cmd)
    assert len(ran) >= 4, ran
    unit_path = root / "etc" / "systemd" / "system" / "streamlstm.service"
    unit = unit_path.read_text()
    assert unit == (DEPLOY / "systemd" / "streamlstm.service").read_text()
    venv = re.search(r"venv (/\S+)", " ".join(steps)).group(1)  # type: ignore[union-attr]
    exe = Path(venv) / "bin" / "streamlstm"
    (root / exe.relative_to("/")).parent.mkdir(parents=True)
    scripts = (ROOT / "pyproject.toml").read_text()
    assert f'{exe.name} = "streamlstm.cli:main"' in scripts  # pip makes bin/streamlstm
    real = shutil.which("streamlstm") or str(Path(sys.executable).with_name("streamlstm"))
    (root / exe.relative_to("/")).symlink_to(real)

    state = "/var/lib/" + re.search(r"^StateDirectory=(\S+)", unit, re.M).group(1)  # type: ignore[union-attr]
    named = []
    for key, value in re.findall(r"^(\w+)=(.*)$", unit, re.M):
        for path in re.findall(r"(-?/[\w./-]+)", value):
            if key == "ExecReload" or path.startswith("-") or path.startswith(state):
                continue  # /bin/kill; optional; systemd creates the state directory
            named.append((key, path))
    assert {k for k, _ in named} >= {"ExecStart", "LoadCredential"}, named
    for key, path in named:
        assert (root / path.lstrip("/")).exists(), f"{key}= names {path}: no step creates it"
    moved = unit
    for _, path in named:
        moved = moved.replace(path, str(root) + path)
    (tmp_path / "streamlstm.service").write_text(moved)
    res = subprocess.run([analyze, "verify", str(tmp_path / "streamlstm.service")],
                         capture_output=True, text=True)  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert "streamlstm.service" not in res.stderr, res.stderr  # no complaint about the unit
