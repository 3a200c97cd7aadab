"""Private temporary directories that do not outlive the process that made them.

A process keeps its directories under one root of its own, `<tmp>/<prefix><random>`, holding a lock file the
process keeps flock()ed for as long as it lives. The root is removed when the process exits; a root left behind
by a process that was killed (the kernel drops the lock with the process) is removed by the next process that
makes a root with the same prefix. A root whose lock is held belongs to a live process and is never touched,
and the lock file only takes its name once it is locked, so a root being set up is never mistaken for a dead one.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import tempfile
import threading

LOCK_NAME = "lock"


class ScratchRoot:
    """The per-process root of one kind of temporary directory, made on first use."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._path: str | None = None
        self._lock_descriptor: int | None = None
        self._mutex = threading.Lock()

    def directory(self) -> str:
        """A new private (0700) directory under this process's root."""
        return tempfile.mkdtemp(dir=self._root())

    def _root(self) -> str:
        with self._mutex:
            if self._path is None:
                remove_abandoned_roots(tempfile.gettempdir(), self.prefix)
                self._path, self._lock_descriptor = _locked_root(self.prefix)
                atexit.register(self.remove)
            return self._path

    def remove(self) -> None:
        """Remove the root and everything under it; the next directory() makes a new one."""
        with self._mutex:
            if self._path is None or self._lock_descriptor is None:
                return
            shutil.rmtree(self._path, ignore_errors=True)
            os.close(self._lock_descriptor)
            self._path = self._lock_descriptor = None
            atexit.unregister(self.remove)


def _locked_root(prefix: str) -> tuple[str, int]:
    root = tempfile.mkdtemp(prefix=prefix)
    descriptor, staged = tempfile.mkstemp(dir=root, prefix=".lock-")
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        os.rename(staged, os.path.join(root, LOCK_NAME))
    except BaseException:
        os.close(descriptor)
        shutil.rmtree(root, ignore_errors=True)
        raise
    return root, descriptor


def remove_abandoned_roots(directory: str, prefix: str) -> list[str]:
    """Remove this user's roots under `directory` whose lock no live process holds; return their paths."""
    removed = []
    with os.scandir(directory) as entries:
        candidates = [entry for entry in entries if entry.name.startswith(prefix)
                      and entry.is_dir(follow_symlinks=False)
                      and entry.stat(follow_symlinks=False).st_uid == os.getuid()]
    for entry in candidates:
        try:
            descriptor = os.open(os.path.join(entry.path, LOCK_NAME), os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue  # no lock file: not a root of this kind
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live process holds it
            # Removed while this process holds the lock: a process sweeping at the same time skips it.
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.path)
        finally:
            os.close(descriptor)
    return removed
