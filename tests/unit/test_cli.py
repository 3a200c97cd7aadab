from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from webhook.cli import main

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_version_prints_the_package_version_and_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    release = tomllib.loads(PYPROJECT.read_text())["project"]["version"]
    assert capsys.readouterr().out == f"trustgate {release}\n"


def test_no_pod_pull_secrets_outside_the_cluster_mode_is_a_usage_error(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--config", str(tmp_path), "--no-pod-pull-secrets"]) == 2
    assert "--no-pod-pull-secrets applies to the in-cluster mode (--namespace) only" in capsys.readouterr().err
