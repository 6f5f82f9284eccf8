"""A stack `dexec bench` starts leaves no data behind (its embedded PostgreSQL is hundreds of
MB a run), unless asked to keep it."""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import dexec.bench as bench


def started_runs(monkeypatch: pytest.MonkeyPatch, *argv: str) -> tuple[list[Path], int]:
    """Run `dexec bench` with a stand-in for the stack's process and the sweep; return the
    data folders of the stacks it started, and its exit code."""
    folders: list[Path] = []
    stopped: list[Any] = []

    def stack_process(spec: dict[str, Any], *, zero: bool) -> tuple[Any, dict[str, Any]]:
        folder = Path(spec["data_dir"])
        folders.append(folder)
        (folder / "pgdata").mkdir()  # what the embedded server leaves
        proc = SimpleNamespace(pid=0)
        return proc, {"url": "http://127.0.0.1:9", "api_key": "k",
                      "database_url": "postgresql://nowhere", "rpc_url": None}

    monkeypatch.setattr(bench, "_stack_process", stack_process)
    monkeypatch.setattr(bench, "_stop_stack_process", stopped.append)
    monkeypatch.setattr(bench, "_sweep", lambda args, url, database_url: 0)
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    code = bench.run(parser.parse_args(["--sweep", "10", *argv]))
    assert len(stopped) == len(folders)  # every stack started is stopped, before its data goes
    return folders, code


def test_the_started_stacks_data_is_removed_at_the_end(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    [folder], code = started_runs(monkeypatch)
    assert code == 0
    assert not folder.exists()


def test_keep_data_keeps_it(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
                            ) -> None:
    [folder], _ = started_runs(monkeypatch, "--keep-data")
    try:
        assert (folder / "pgdata").is_dir()
        assert str(folder) in capsys.readouterr().err
    finally:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
