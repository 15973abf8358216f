"""Every command README.md, deploy/README.md and the config comments show is run by a
test, or is listed here as one that cannot run on a test machine with what checks it
as far as it can be checked. A command added to a document without an entry fails
``test_every_documented_command_has_its_test``; an entry whose command left the
documents fails it too.

RUN_BY names the test that runs the command (or the same subcommand with the same
flags: the test's module must hold the subcommand and every flag of the command).
NOT_RUN_HERE says why a command cannot run here and names the test that checks what
it would act on."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import pytest

from streamlstm import cli
from tests import documented

ROOT = documented.ROOT
README_RUN = (
    "tests/integration/test_readme_run.py::test_readme_path_from_a_fresh_clone_to_a_scoring_daemon"  # noqa: E501
)
DEPLOY = "tests/unit/deploy/test_deploy.py::"
SYSTEMD = DEPLOY + "test_systemd_steps_create_every_file_the_unit_names"
K8S = "tests/unit/deploy/test_kubernetes_schemas.py::test_every_object_validates_against_the_kubernetes_schemas"  # noqa: E501
AMTOOL = DEPLOY + "test_alertmanager_example_is_valid_and_routes_page_and_ticket_apart"
RULE = DEPLOY + "test_prometheusrule_is_built_from_the_rules_file"
SCALE_OUT = "tests/integration/test_scale_out.py::test_scale_1_3_2_rolling_restart_and_kill_keep_state_and_alerts_exact"  # noqa: E501
CI = ".ci/run"  # runs the README's install and test line itself

RUN_BY: dict[str, str] = {
    # README: first contact
    "python3 -m venv .venv": CI,
    '.venv/bin/pip install -q -e ".[test]" torch==2.13.0': CI,
    ".venv/bin/python -m pytest -q": CI,
    ".venv/bin/streamlstm demo": "tests/integration/test_daemon.py::test_demo_prints_alerts_and_stops_cleanly",  # noqa: E501
    # README: Run it for real (the whole block, in order, as read from the README)
    "streamlstm demo --save-history history.jsonl.gz": README_RUN,
    "streamlstm train --data history.jsonl.gz --config config/pipeline.yaml --out config/models/sensors.npz": README_RUN,  # noqa: E501
    "streamlstm check-config config/pipeline.yaml": README_RUN,
    "streamlstm demo --broker localhost:9092 &": README_RUN,
    "streamlstm run --config config/pipeline.yaml": README_RUN,
    "streamlstm alerts --url http://127.0.0.1:10131": README_RUN,
    "streamlstm inspect config/checkpoints/sensors --streams 5": README_RUN,
    # README: Use
    "pip install -e .": CI,
    "streamlstm import-torch state.pt --features temp,pressure,flow --out pump.npz": "tests/unit/cli/test_import_torch.py::test_imported_model_forecasts_like_torch",  # noqa: E501
    "streamlstm score --model pump.npz --input events.csv --key machine --time ts --out scores.csv --plot scores.png": "tests/unit/cli/test_cli_score.py::test_plots_one_per_stream_capped",  # noqa: E501
    "streamlstm evaluate --model pump.npz --data incidents.csv --labels windows.json --key machine --time ts --report report.html": "tests/unit/evaluation/test_evaluation.py::test_evaluate_command_html_report_with_plots",  # noqa: E501
    "streamlstm evaluate --data series.csv --labels windows.json --learn-first 0.15": "tests/unit/evaluation/test_evaluation.py::test_evaluate_png_report_and_learn_first",  # noqa: E501
    "streamlstm evaluate --data fleet.csv --label-column label --key machine --time ts --learn-first 0.3": "tests/unit/evaluation/test_kinds.py::test_evaluate_shows_the_fleet_kinds_and_counts_match_the_window_log",  # noqa: E501
    "streamlstm train --data history.csv.gz --key machine --time ts --features temp,pressure,flow --out pump.npz --plot loss.png": "tests/unit/training/test_trainer.py::test_train_command_writes_model_plot_and_report",  # noqa: E501
    "streamlstm train --data history.jsonl.gz --config config/pipeline.yaml --out pump.npz": "tests/unit/training/test_trainer.py::test_train_command_decodes_with_the_pipeline_config",  # noqa: E501
    "streamlstm score --example": "tests/unit/cli/test_cli_score.py::test_example_runs_from_any_directory",  # noqa: E501
    "streamlstm check-config --schema > streamlstm.schema.json": "tests/unit/service/test_config_schema.py::test_cli_prints_a_valid_draft_2020_12_schema",  # noqa: E501
    "streamlstm train --stream-norm warmup": "tests/unit/training/test_trainer.py::test_train_stream_norm_warmup_is_recorded_in_the_model",  # noqa: E501
    "streamlstm train": "tests/unit/training/test_trainer.py::test_train_command_writes_model_plot_and_report",  # noqa: E501
    "streamlstm score": "tests/unit/cli/test_cli_score.py::test_csv_output_equals_the_detector",
    "streamlstm bench": "tests/unit/cli/test_bench.py::test_tiny_run_writes_the_table",
    # deploy/README.md
    "streamlstm train --data history.csv.gz --key machine --time ts --features temp,pressure,flow --out /var/lib/streamlstm-models/pump.npz": "tests/unit/training/test_trainer.py::test_train_command_writes_model_plot_and_report",  # noqa: E501
    "streamlstm check-config /etc/streamlstm/pipeline.yaml": "tests/unit/cli/test_check_config.py::test_shipped_configs_pass_without_models",  # noqa: E501
    "install -d -m 0750 /etc/streamlstm": SYSTEMD,
    "install -m 0640 pipeline.yaml /etc/streamlstm/": SYSTEMD,
    "install -m 0600 /dev/null /etc/streamlstm/kafka-password": SYSTEMD,
    "install -m 0644 deploy/systemd/streamlstm.service /etc/systemd/system/": SYSTEMD,
    "amtool check-config deploy/prometheus/alertmanager.yml": AMTOOL,
    "amtool config routes test --config.file=deploy/prometheus/alertmanager.yml severity=page": AMTOOL,  # noqa: E501
    "promtool test rules deploy/prometheus/tests/*.yml": DEPLOY + "test_promtool_rule_unit_tests",
    "promtool test rules prometheus/tests/*.yml": DEPLOY + "test_promtool_rule_unit_tests",
    "python deploy/kubernetes/make_prometheusrule.py > deploy/kubernetes/prometheusrule.yaml": RULE,  # noqa: E501
}

NOT_RUN_HERE: dict[str, tuple[str, str]] = {
    "pip install 'streamlstm[confluent]'": (
        "the confluent extra's package is in the test extra .ci/run installs",
        "tests/unit/test_documented_commands.py::test_the_confluent_extra_is_in_the_test_extra",
    ),
    '.venv/bin/pip install -q -e ".[demo]"': (
        "the demo extra is a subset of the test extra .ci/run installs",
        "tests/unit/test_documented_commands.py::test_the_demo_extra_is_in_the_test_extra",
    ),
    "python benchmarks/bench_decode.py --digits 4": (
        "a benchmark of a minute; the same flags with fewer records run",
        "tests/unit/io/test_fastjson.py::test_the_decode_benchmark_runs_as_the_readme_shows_it",
    ),
    "python benchmarks/bench_kernels.py --repeats 7": (
        "a benchmark of minutes; the flags parse and a tiny run works",
        "tests/unit/cli/test_bench.py::test_argv_round_trips",
    ),
    "streamlstm bench --hidden 64 --layers 1 --batch 1,64,1024 --repeats 5 --scorer regime": (
        "a benchmark of minutes; the same flags parse and a tiny run works",
        "tests/unit/cli/test_bench.py::test_tiny_run_writes_the_table",
    ),
    "cp config/pipeline.yaml /etc/streamlstm/pipeline.yaml": (
        "writes to the host's /etc; the file copied is checked",
        "tests/unit/cli/test_check_config.py::test_shipped_configs_pass_without_models",
    ),
    "useradd --system --home /var/lib/streamlstm --shell /usr/sbin/nologin streamlstm": (
        "adds a host user",
        SYSTEMD,
    ),
    "python3.11 -m venv /opt/streamlstm": ("installs into the host's /opt", SYSTEMD),
    "/opt/streamlstm/bin/pip install /path/to/streamlstm": (
        "installs into the host's /opt",
        SYSTEMD,
    ),  # noqa: E501
    "vi /etc/streamlstm/kafka-password": ("an editor", SYSTEMD),
    "systemctl daemon-reload": ("needs systemd as PID 1", SYSTEMD),
    "systemctl enable --now streamlstm": ("needs systemd as PID 1", SYSTEMD),
    "systemctl status streamlstm": ("needs systemd as PID 1", SYSTEMD),
    "systemctl stop": (
        "needs systemd as PID 1; SIGTERM is what it sends",
        "tests/integration/test_systemd_notify.py::test_ready_watchdog_and_stopping_reach_the_notify_socket",
    ),  # noqa: E501
    "systemctl reload streamlstm": (
        "needs systemd as PID 1; SIGHUP is what it sends",
        "tests/unit/service/test_loop.py::test_reload_keeps_state_or_refuses_other_shape",
    ),  # noqa: E501
    "journalctl -u streamlstm -f": ("needs systemd's journal", SYSTEMD),
    "docker build -f deploy/container/Dockerfile -t registry.example/streamlstm:0.1.0 .": (
        "no container daemon; the image's read-only cache start is run without it",
        "tests/integration/test_readonly_cache.py::test_entry_point_with_a_read_only_baked_cache_is_ready_without_compiling",  # noqa: E501
    ),
    "docker build -f deploy/container/Dockerfile.models -t registry.example/streamlstm-models:sensors-1 models/": (  # noqa: E501
        "no container daemon; the init container's copy and paths are checked",
        "tests/unit/deploy/test_kubernetes_schemas.py::test_the_model_needs_no_shared_volume",
    ),
    "mkdir -p models": (
        "the build context of the model image",
        "tests/unit/deploy/test_kubernetes_schemas.py::test_the_model_needs_no_shared_volume",
    ),  # noqa: E501
    "cp /var/lib/streamlstm-models/sensors.npz models/": (
        "the build context of the model image",
        "tests/unit/deploy/test_kubernetes_schemas.py::test_the_model_needs_no_shared_volume",
    ),  # noqa: E501
    "kubectl create namespace streamlstm": ("no cluster", K8S),
    "kubectl -n streamlstm create secret generic streamlstm-kafka --from-literal=password='...'": (
        "no cluster; the StatefulSet's env names the secret",
        DEPLOY + "test_probes_ports_and_grace_agree_with_the_daemon",
    ),
    "kubectl apply -k deploy/kubernetes": (
        "no cluster; the kustomization is applied in Python",
        K8S,
    ),  # noqa: E501
    "kubectl apply -k": ("no cluster; the kustomization is applied in Python", K8S),
    "kubectl -n streamlstm scale statefulset streamlstm --replicas=N": (
        "no cluster; daemons of one group scaled 1 -> 3 -> 2 on a broker stand in",
        SCALE_OUT,
    ),
    "kubectl rollout restart": (
        "no cluster; each daemon of the group stopped and started again stands in",
        SCALE_OUT,
    ),
}


def _node_exists(node: str) -> bool:
    if node == CI:
        text = (ROOT / ".ci/run").read_text()
        return "'^# Run the test suite'" in text and 'eval "$test_cmd"' in text
    path, _, name = node.partition("::")
    tree = ast.parse((ROOT / path).read_text())
    return any(isinstance(n, ast.FunctionDef) and n.name == name for n in ast.walk(tree))


def test_every_documented_command_has_its_test() -> None:
    shown = documented.commands()
    listed = set(RUN_BY) | set(NOT_RUN_HERE)
    assert not set(RUN_BY) & set(NOT_RUN_HERE)
    missing = {c: shown[c] for c in shown if c not in listed}
    assert not missing, f"commands shown with no test (add one, then an entry here): {missing}"
    gone = sorted(listed - set(shown))
    assert not gone, f"entries for commands no document shows any more: {gone}"
    for cmd in shown:
        node = RUN_BY[cmd] if cmd in RUN_BY else NOT_RUN_HERE[cmd][1]
        assert _node_exists(node), f"{cmd!r}: {node} does not exist"


@pytest.mark.parametrize("cmd", sorted(RUN_BY))
def test_the_named_test_runs_that_subcommand_with_those_flags(cmd: str) -> None:
    node = RUN_BY[cmd]
    if node in (CI, README_RUN, SYSTEMD):
        return  # these read the commands from the documents and run them as written
    source = (ROOT / node.partition("::")[0]).read_text()
    words = shlex.split(cmd.split(" > ")[0])
    if Path(words[0]).name == "streamlstm":
        words = words[1:]
    wanted = [words[0]] + [w.split("=")[0] for w in words[1:] if w.startswith("-")]
    for w in wanted:
        assert re.search(rf"(?<![\w-]){re.escape(w)}(?![\w-])", source), (
            f"{node} does not run {cmd!r}: {w!r} is not in {node.partition('::')[0]}"
        )


@pytest.mark.parametrize(
    "cmd", sorted(c for c in documented.commands() if c.startswith("streamlstm "))
)
def test_every_streamlstm_command_shown_parses(
    cmd: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The flags and subcommands the documents show exist (a wrong one exits 2 here).
    Prose may name a subcommand with one flag (`streamlstm train --stream-norm warmup`):
    missing required arguments are no error of the document."""
    argv = shlex.split(cmd.split(" > ")[0].removesuffix("&"))[1:]
    try:
        args = cli.build_parser().parse_args(argv)
    except SystemExit:
        err = capsys.readouterr().err
        assert "the following arguments are required" in err, err
        assert "unrecognized arguments" not in err and "invalid choice" not in err, err
        return
    assert args.command == argv[0]


def test_the_demo_extra_is_in_the_test_extra() -> None:
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert set(extras["demo"]) <= set(extras["test"]), extras


def test_the_confluent_extra_is_in_the_test_extra() -> None:
    """kafka.client: confluent is tested in CI: the test extra installs what the
    confluent extra does (at a release at least as new)."""
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    (want,) = extras["confluent"]
    (got,) = [r for r in extras["test"] if r.startswith("confluent-kafka")]
    assert want.startswith("confluent-kafka>=") and got.startswith("confluent-kafka>=")
    as_tuple = [tuple(int(x) for x in r.split(">=")[1].split(".")) for r in (want, got)]
    assert as_tuple[1] >= as_tuple[0], (want, got)
