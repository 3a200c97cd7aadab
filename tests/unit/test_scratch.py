"""Per-process temporary roots: removed with their process, and by the next process when it was killed, never
while their process lives. The other process is a real one, holding its root as trustgate does."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from webhook.scratch import LOCK_NAME, ScratchRoot, remove_abandoned_roots

PREFIX = "tg-scratch-test-"
HOLD_A_ROOT = f"""
import sys
from webhook.scratch import ScratchRoot
print(ScratchRoot({PREFIX!r}).directory(), flush=True)
sys.stdin.read()
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """A live process that made a root under tmp_path; yields it and the directory it made there."""
    process = subprocess.Popen([sys.executable, "-c", HOLD_A_ROOT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True, env={**os.environ, "TMPDIR": str(tmp_path)})
    assert process.stdout is not None
    directory = Path(process.stdout.readline().strip())
    yield process, directory
    process.kill()
    process.wait()


def test_the_root_of_a_live_process_is_kept_and_removed_once_it_is_killed(
        tmp_path: Path, holder: tuple[subprocess.Popen[str], Path]) -> None:
    process, directory = holder
    root = directory.parent
    assert root.parent == tmp_path and (root / LOCK_NAME).is_file() and directory.is_dir()
    assert remove_abandoned_roots(str(tmp_path), PREFIX) == []
    assert directory.is_dir()
    process.kill()
    process.wait()
    assert remove_abandoned_roots(str(tmp_path), PREFIX) == [str(root)]
    assert list(tmp_path.iterdir()) == []


def test_a_process_that_exits_removes_its_root(tmp_path: Path, holder: tuple[subprocess.Popen[str], Path]) -> None:
    process, _ = holder
    process.communicate("")  # end of input: the holder exits normally
    assert process.returncode == 0
    assert list(tmp_path.iterdir()) == []


def test_a_directory_without_a_lock_is_not_a_root(tmp_path: Path) -> None:
    (tmp_path / f"{PREFIX}other").mkdir()
    assert remove_abandoned_roots(str(tmp_path), PREFIX) == []
    assert (tmp_path / f"{PREFIX}other").is_dir()


def test_remove_takes_everything_and_a_later_directory_makes_a_new_root(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    scratch = ScratchRoot(PREFIX)
    first = Path(scratch.directory())
    (first / "file").write_text("x")
    scratch.remove()
    assert list(tmp_path.iterdir()) == []
    second = Path(scratch.directory())
    assert second.parent != first.parent and second.is_dir()
    scratch.remove()
    assert list(tmp_path.iterdir()) == []
