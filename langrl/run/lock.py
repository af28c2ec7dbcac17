"""One writer per run folder: an exclusive ``flock`` on ``<run>/.lock``.

The kernel releases the lock when the process ends, however it ends (``kill -9`` included), so a crash
never leaves a folder locked; the pid in the file only makes the message helpful.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from langrl.errors import ConfigError

LOCK_FILE = ".lock"


class RunLock:
    """``with RunLock(run_dir):`` holds the run folder for this process, or raises ConfigError at once."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise ConfigError(f"--output {str(self.path.parent)!r} cannot be written ({e.strerror}); "
                              f"choose a folder you can write to") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ConfigError(f"--output {str(self.path.parent)!r} is in use by another langrl process "
                              f"(pid {holder}); wait for it to finish or choose another folder") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the lock
            self.fd = None
