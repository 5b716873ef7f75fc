"""The writer lock (audit F16: a second concurrent writer fails fast)."""

import os
import subprocess
import sys

import pytest

from trustseg.core.errors import DataError
from trustseg.core.lock import LOCK, exclusive, holder


def test_lock_is_created_with_the_pid_and_removed(tmp_path):
    folder = tmp_path / "run"
    with exclusive(folder, "run") as lock:
        assert lock == folder / LOCK and holder(folder) == os.getpid()
    assert not (folder / LOCK).exists() and holder(folder) is None


def test_second_writer_in_the_same_process_fails(tmp_path):
    with exclusive(tmp_path, "run"):
        with pytest.raises(DataError, match=rf"run is being written by process {os.getpid()}; wait or remove .*{LOCK}"):
            with exclusive(tmp_path, "run"):
                pass
        assert holder(tmp_path) == os.getpid()  # the failed attempt did not remove the holder's lock
    assert holder(tmp_path) is None


def test_lock_of_a_running_process_is_respected(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / LOCK).write_text(f"{child.pid}\n")
        with pytest.raises(DataError, match=f"results is being written by process {child.pid}"):
            with exclusive(tmp_path, "results"):
                pass
        assert holder(tmp_path) == child.pid
    finally:
        child.kill()
        child.wait()


def test_stale_lock_of_a_finished_process_is_taken_over(tmp_path):
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / LOCK).write_text(child.stdout)  # that process has exited: the lock is stale
    with exclusive(tmp_path, "run"):
        assert holder(tmp_path) == os.getpid()
    assert not (tmp_path / LOCK).exists()
    (tmp_path / LOCK).write_text("garbage")  # unreadable content counts as stale too
    with exclusive(tmp_path, "run"):
        assert holder(tmp_path) == os.getpid()
