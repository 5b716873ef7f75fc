"""README.md's CLI tour and Python snippets still run (shrunk: fewer cases, smaller images, 1 epoch).

The commands are read from README.md itself, so an edit that breaks them fails here. Shrinking only rewrites
sizes (cases, image size, epochs, distortion list, members); every subcommand and option the README shows runs.
The LIDC import (needs ../shared/data) and the torchrun line (tested in tests/engine/test_ddp.py) are skipped.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

from trustseg.cli.main import main

README = Path(__file__).resolve().parents[1] / "README.md"

SHRINK = [
    (r"--cases \d+", "--cases 80"),  # the QC fit needs >= 10 validation cases
    (r"--size \d+", "--size 16"),
    (r"--epochs \d+", "--epochs 1"),
    (r"--distort [\w,]+", "--distort noise,blur"),
    (r"--severity [\d,.]+", "--severity 1"),
    (r"members=\d+", "members=2"),
    (r"cases=\d+", "cases=8"),
    (r"size=\d+", "size=16"),
    (r"epochs=\d+", "epochs=1"),
]


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.S)


def _shrink(text: str) -> str:
    for pattern, repl in SHRINK:
        text = re.sub(pattern, repl, text)
    return text


def tour_commands() -> list[list[str]]:
    """The `trustseg ...` lines of the README's CLI tour, continuation lines joined, comments dropped."""
    tour = next(b for b in _blocks("bash") if "trustseg synth" in b)
    lines = tour.replace("\\\n", " ").splitlines()
    cmds = []
    for line in lines:
        line = line.split(" # ")[0].strip()
        if line.startswith("trustseg ") and not line.startswith("trustseg import lidc"):
            cmds.append(shlex.split(_shrink(line))[1:])
    return cmds


def test_the_tour_has_the_main_subcommands():
    names = [c[0] for c in tour_commands()]
    for sub in ("synth", "train", "predict", "evaluate", "calibrate"):
        assert sub in names, f"the README tour lost `trustseg {sub}`"


@pytest.mark.slow
def test_readme_cli_tour_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for argv in tour_commands():
        argv = [a for a in argv if a != "--workers" and not (a.isdigit() and argv[argv.index(a) - 1] == "--workers")]
        assert main(argv + (["--no-progress"] if argv[0] in ("train", "predict") else [])) == 0, argv
    assert (tmp_path / "runs/ens-eval/results.json").is_file()


@pytest.mark.slow
def test_readme_python_snippets_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for code in _blocks("python"):
        exec(compile(_shrink(code), str(README), "exec"), {"__name__": "readme"})  # noqa: S102
    assert os.path.isdir(tmp_path / "runs")
