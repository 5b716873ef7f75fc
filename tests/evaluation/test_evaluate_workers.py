"""``evaluate --workers N``: the cases scored in N spawn processes give the one-process results file; a failing
case gives the one-process error; a dead worker or Ctrl-C leaves no worker behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.engine.test_sharded import _data, _torchscript
from trustseg.cli.main import main
from trustseg.core.errors import ConfigError, DataError
from trustseg.evaluation import evaluate as evaluate_module
from trustseg.evaluation import evaluate_predictions
from trustseg.evaluation.context import SuiteConfig
from trustseg.evaluation.parallel import Failure, run_blocks, worker_threads
from trustseg.evaluation.results import flatten

ROOT = Path(__file__).resolve().parents[2]


def block_job(n: int, *, shard: tuple[int, int]) -> list[int]:
    """The block ``shard`` of ``range(n)`` (as ``load_pairs`` cuts its cases)."""
    i, w = shard
    return list(range(i * n // w, (i + 1) * n // w))


def failing_job(bad: int, *, shard: tuple[int, int]) -> int:
    if shard[0] == bad:
        raise DataError("case x: probabilities contain NaN", "pred/x_probs.npy")
    return shard[0]


def dying_job(bad: int, *, shard: tuple[int, int]) -> int:
    if shard[0] == bad:
        os._exit(3)
    return shard[0]


def sleeping_job(folder: str, *, shard: tuple[int, int]) -> None:
    """Record this worker's pid, then sleep (a worker that Ctrl-C must terminate)."""
    (Path(folder) / f"w{shard[0]}.pid").write_text(str(os.getpid()))
    time.sleep(120)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """6 tiny 2D cases predicted by a convolution: probabilities and uncertainty maps."""
    tmp = tmp_path_factory.mktemp("workers")
    data = _data(tmp)
    pred = tmp / "pred"
    args = ["predict", "--model", _torchscript(tmp), "--input", str(data), "--out", str(pred), "--no-progress"]
    assert main(args) == 0
    return data, pred


def test_blocks_come_back_in_order_and_threads_are_shared():
    assert run_blocks(block_job, (7,), 3) == [[0, 1], [2, 3], [4, 5, 6]]
    assert run_blocks(block_job, (2,), 1) == [[0, 1]]
    assert worker_threads(1) >= 1 and worker_threads(10_000) == 1
    with pytest.raises(ConfigError, match="workers=0"):
        run_blocks(block_job, (2,), 0)


def test_a_failing_block_raises_its_error_and_a_dead_worker_is_reported():
    with pytest.raises(DataError, match=r"^pred/x_probs\.npy: case x: probabilities contain NaN$") as e:
        run_blocks(failing_job, (1,), 2)
    assert e.value.path == Path("pred/x_probs.npy")
    with pytest.raises(RuntimeError, match="worker 0 stopped without a result .exit code 3"):
        run_blocks(dying_job, (0,), 2)


def test_failure_keeps_unpicklable_errors_as_text():
    class Local(Exception):  # a local class does not pickle
        pass

    err = Failure.of(Local("boom")).rebuild()
    assert isinstance(err, RuntimeError) and str(err) == "Local: boom"
    assert isinstance(Failure.of(KeyError("k")).rebuild(), KeyError)
    assert str(Failure.of(ConfigError("bad option")).rebuild()) == "bad option"


def _same_results(a: dict, b: dict) -> list[str]:
    """Assert two results files agree (rows bit for bit, pooled sums to float round-off); the keys that differ."""
    assert a["cases"] == b["cases"] and a["per_case"] == b["per_case"]  # rows are per case: bit for bit
    fa, fb = (flatten({k: v for k, v in r.items() if k != "csv"}) for r in (a, b))
    assert fa.keys() == fb.keys()
    differ = []
    for key, va in fa.items():
        vb = fb[key]
        if isinstance(va, float) and isinstance(vb, float):
            assert va == pytest.approx(vb, rel=1e-12, abs=1e-12), key  # pooled sums: float round-off only
            differ += [key] if va != vb else []
        else:
            assert va == vb, key
    return differ


def test_two_workers_write_the_one_process_results(folder, tmp_path):
    data, pred = folder
    evaluate_predictions(pred, data, tmp_path / "one" / "r.json")
    evaluate_predictions(pred, data, tmp_path / "two" / "r.json", workers=2)
    a, b = (json.loads((tmp_path / d / "r.json").read_text()) for d in ("one", "two"))
    assert a["cases"] == [f"case{i}" for i in range(6)]
    assert (tmp_path / "one" / "r.csv").read_text() == (tmp_path / "two" / "r.csv").read_text()
    differ = _same_results(a, b)
    # not byte-equal: float pooled sums (the calibration NLL) add in another order; counts and rows are equal
    assert all(k.startswith(("calibration/", "uncertainty/")) for k in differ), differ


def test_more_workers_than_cases_one_per_case(folder, tmp_path, monkeypatch):
    data, pred = folder
    seen = []

    def in_process(fn, args, workers):  # the blocks of run_blocks, here, in order
        seen.append(workers)
        return [fn(*args, shard=(i, workers)) for i in range(workers)]

    monkeypatch.setattr(evaluate_module, "run_blocks", in_process)
    evaluate_predictions(pred, data, tmp_path / "one" / "r.json")
    evaluate_predictions(pred, data, tmp_path / "many" / "r.json", workers=9)
    assert seen == [6]
    a, b = (json.loads((tmp_path / d / "r.json").read_text()) for d in ("one", "many"))
    _same_results(a, b)


def test_exact_reaches_the_suite(folder, tmp_path):
    data, pred = folder
    out = tmp_path / "exact.json"
    args = ["evaluate", "--pred", str(pred), "--data", str(data), "--out", str(out), "--exact", "--workers", "2"]
    assert main(args) == 0
    assert json.loads(out.read_text())["config"]["exact"] is True
    ref = evaluate_predictions(pred, data, tmp_path / "ref.json", suite=SuiteConfig(exact=True))
    assert json.loads(out.read_text())["per_case"] == json.loads((tmp_path / "ref.json").read_text())["per_case"]
    assert ref["config"]["exact"] is True
    assert main(["evaluate", "--pred", str(pred), "--data", str(data), "--out", str(tmp_path / "s.json")]) == 0
    assert json.loads((tmp_path / "s.json").read_text())["config"]["exact"] is False


def test_bad_workers_exit_2(folder, tmp_path, capsys):
    data, pred = folder
    out = tmp_path / "r.json"
    code = main(["evaluate", "--pred", str(pred), "--data", str(data), "--out", str(out), "--workers", "0"])
    assert code == 2 and "--workers=0" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_a_failing_case_in_a_worker_gives_the_one_process_error(folder, tmp_path):
    data, src = folder
    pred = tmp_path / "pred"
    subprocess.run(["cp", "-r", str(src), str(pred)], check=True)
    index = json.loads((pred / "predictions.json").read_text())
    probs_file = pred / index["cases"][4]["files"]["probs"]  # in the second block of two
    probs = np.load(probs_file)
    probs[0, 0, 0] = np.nan
    np.save(probs_file, probs)
    errors = []
    for workers in (1, 2):
        with pytest.raises(DataError) as e:
            evaluate_predictions(pred, data, tmp_path / f"w{workers}" / "r.json", workers=workers)
        errors.append(str(e.value))
        assert e.value.path == probs_file
        assert not (tmp_path / f"w{workers}" / "r.json").exists()
    assert errors[0] == errors[1] and "case4" in errors[0] and probs_file.name in errors[0]


def test_ctrl_c_terminates_the_workers(tmp_path):
    # SIGINT's default handler, explicitly: a process started with SIGINT ignored (SIG_IGN is inherited through
    # exec, and the full suite's worker can hold it) would otherwise never see the Ctrl-C this test sends
    script = (
        "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from tests.evaluation.test_evaluate_workers import sleeping_job; "
        "from trustseg.evaluation.parallel import run_blocks; run_blocks(sleeping_job, (sys.argv[1],), 2)"
    )
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], env=env, cwd=ROOT, stderr=subprocess.PIPE)
    pid_files = [tmp_path / "w0.pid", tmp_path / "w1.pid"]
    deadline = time.monotonic() + 120
    while not all(p.is_file() and p.read_text() for p in pid_files):
        assert proc.poll() is None and time.monotonic() < deadline, "the workers did not start"
        time.sleep(0.2)
    pids = [int(p.read_text()) for p in pid_files]
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:  # say what was still running before failing
        alive = [pid for pid in pids if os.path.exists(f"/proc/{pid}")]
        proc.kill()
        _, err = proc.communicate()
        for pid in alive:
            os.kill(pid, signal.SIGKILL)
        inherited = signal.getsignal(signal.SIGINT)
        pytest.fail(f"the parent did not stop within 60 s of SIGINT (this process's SIGINT: {inherited}); "
                    f"workers alive: {alive}; stderr: {err[-2000:]!r}")  # fmt: skip
    assert proc.returncode != 0 and b"KeyboardInterrupt" in err
    for pid in pids:
        for _ in range(50):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"worker {pid} still runs after Ctrl-C")


def test_workers_under_torchrun_are_refused(folder, tmp_path, monkeypatch, capsys):
    data, pred = folder
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    out = tmp_path / "r.json"
    code = main(["evaluate", "--pred", str(pred), "--data", str(data), "--out", str(out), "--workers", "2"])
    assert code == 2 and "under torchrun the ranks already share the cases" in capsys.readouterr().err
    assert not out.exists()
