"""The operator's files: cluster.yaml for `ray up`, serve_config.yaml for `serve deploy`."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.serve import Application
from ray.serve.schema import ServeDeploySchema

from dexec.launch import Engine

ROOT = Path(__file__).resolve().parents[2]


def commands(config: dict[str, Any], key: str) -> str:
    return "\n".join(config.get(key, []))


def test_cluster_yaml_is_a_valid_launcher_config_that_runs_dexec() -> None:
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_config(prepare_config(config))  # Ray's own schema for `ray up`

    types = config["available_node_types"]
    assert config["head_node_type"] in types
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    assert workers and all(t["max_workers"] >= 1 for t in workers)
    assert "pip install" in commands(config, "setup_commands")
    assert "~/dexec" in config["file_mounts"]
    head = commands(config, "head_start_ray_commands")
    assert "ray start --head" in head and "--metrics-export-port=9464" in head
    assert "dexec up --address auto" in head
    assert "ray start --address=$RAY_HEAD_IP:6379" in commands(config, "worker_start_ray_commands")
    text = (ROOT / "cluster.yaml").read_text()
    for setting in ("DEXEC_DATABASE_URL", "DEXEC_WORKERS_PER_NODE", "DEXEC_WALLET_KEYPAIR"):
        assert setting in text
    assert ".dexec.env" in (ROOT / ".gitignore").read_text(), "the settings file holds secrets"


def test_cluster_yaml_authenticates_ray_and_ships_no_secret_in_plain_files() -> None:
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        for command in config[key]:
            assert "RAY_AUTH_MODE=token" in command, (key, command)  # every Ray process
    head = commands(config, "head_start_ray_commands")
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head  # noqa: S104
    # Secrets come from the secret store into 0600 files, not from file_mounts.
    assert not any("secret" in k or "token" in k or "key" in k for k in config["file_mounts"])
    setup = commands(config, "setup_commands")
    assert "umask 077" in setup and "secretsmanager get-secret-value" in setup
    for node_type in config["available_node_types"].values():
        assert node_type["node_config"]["IamInstanceProfile"]["Name"]


def test_serve_config_deploys_the_dexec_builder(engine: Engine) -> None:
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    schema = ServeDeploySchema.model_validate(config)
    [application] = schema.applications
    module, attr = application.import_path.split(":")
    builder = getattr(importlib.import_module(module), attr)
    # Build against the running test stack (its actors already exist, so they are reused).
    assert engine.settings.database_url is not None
    app = builder({
        "database_url": engine.settings.database_url.get_secret_value(),
        "namespace": engine.settings.namespace,
        "data_dir": str(engine.settings.data_dir),
    })
    assert isinstance(app, Application)
