"""Fixtures over the real components in `infra`: one registry, lookaside and keyring per test session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e import infra


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e" in str(item.path):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[infra.Registry]:
    server = infra.start_registry(tmp_path_factory.mktemp("registry"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def lookaside(tmp_path_factory: pytest.TempPathFactory) -> Iterator[infra.Lookaside]:
    server = infra.start_lookaside(tmp_path_factory.mktemp("lookaside"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def registries_d(tmp_path_factory: pytest.TempPathFactory, lookaside: infra.Lookaside,
                 registry: infra.Registry) -> Path:
    return lookaside.write_registries_d(tmp_path_factory.mktemp("registries.d"), registry)


@pytest.fixture(scope="session")
def gpg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[infra.GpgKeys]:
    """Release keys the cluster trusts (RSA and Ed25519) and a rogue key it does not."""
    with infra.gpg_keys(tmp_path_factory.mktemp("gnupg")) as keys:
        keys.generate("release-rsa", "rsa3072")
        keys.generate("release-ed", "ed25519")
        keys.generate("rogue", "rsa3072")
        yield keys


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def trustgate(*args: str, env: dict[str, str] | None = None) -> Run:
    completed = subprocess.run([sys.executable, "-m", "webhook", *args], capture_output=True, text=True,
                               timeout=120, check=False, env={**os.environ, **(env or {})})
    return Run(completed.returncode, completed.stdout, completed.stderr)


def write_config(directory: Path, *documents: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "trust.yaml").write_text(yaml.safe_dump_all(documents))
    return directory
