import errno
import json
import math
import os
from pathlib import Path

import pytest
import torch

from trustseg.core.atomic import atomic_dir, atomic_torch_save, atomic_write_json, atomic_write_text, swap_in
from trustseg.core.errors import DataError


def test_failed_write_keeps_old_file(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        from trustseg.core.atomic import atomic_path

        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_dir_replaces_whole_or_nothing(tmp_path):
    out = tmp_path / "ds"
    with atomic_dir(out) as d:
        (d / "x").write_text("1")
    with pytest.raises(RuntimeError, match="fail"):
        with atomic_dir(out, overwrite=True) as d:
            (d / "y").write_text("2")
            raise RuntimeError("fail")
    assert sorted(p.name for p in out.iterdir()) == ["x"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    with atomic_dir(out, overwrite=True) as d:
        (d / "z").write_text("3")
    assert sorted(p.name for p in out.iterdir()) == ["z"]


def test_atomic_dir_refuses_a_non_empty_folder_without_overwrite(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    with atomic_dir(out) as d:  # an empty folder is replaced
        (d / "x").write_text("1")
    with pytest.raises(DataError, match="ds: exists and is not empty"):
        with atomic_dir(out) as d:
            (d / "y").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == ["x"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_swap_in_replaces_and_removes_the_old_folder(tmp_path):
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "a").write_text("new")
    (tmp_path / "cur").mkdir()
    (tmp_path / "cur" / "b").write_text("old")
    swap_in(tmp_path / "new", tmp_path / "cur")
    assert [p.name for p in tmp_path.iterdir()] == ["cur"]
    assert [p.name for p in (tmp_path / "cur").iterdir()] == ["a"]


def test_json_nan_becomes_null_and_torch_save(tmp_path):
    atomic_write_json(tmp_path / "m.json", {"a": math.nan, "b": torch.tensor([1.0, 2.0]), "c": (1, 2)})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": None, "b": [1.0, 2.0], "c": [1, 2]}
    atomic_torch_save({"w": torch.ones(2)}, tmp_path / "ck.pt")
    assert torch.equal(torch.load(tmp_path / "ck.pt", weights_only=True)["w"], torch.ones(2))


def test_csv_text_columns_in_first_seen_order_and_formats(tmp_path):
    from trustseg.core.atomic import atomic_write_csv, csv_text

    text = csv_text([{"a": 1, "b": 0.123456789}, {"c": "x", "a": math.nan}])
    assert text.splitlines() == ["a,b,c", "1,0.123457,", "nan,,x"]
    assert atomic_write_csv(tmp_path / "t.csv", [{"k": 2.0}]).read_text() == "k\n2\n"


def test_a_full_disk_is_one_clear_error_and_the_earlier_file_stays(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    atomic_write_json(path, {"old": 1})

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(DataError, match="no space left") as e:
        atomic_write_json(path, {"new": 2})
    assert str(path) in str(e.value)
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary file left


def test_torch_save_on_a_full_disk_is_named(tmp_path, monkeypatch):
    def full(obj, f):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 3072 vs 2992")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(DataError, match="no space left"):
        atomic_torch_save({"a": 1}, tmp_path / "last.pt")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("code", "words"),
    [(errno.ENOSPC, "no space left"), (errno.EROFS, "read-only"), (errno.EACCES, "permission denied")],
)
def test_make_dirs_turns_a_full_disk_into_one_line_naming_the_folder(tmp_path, monkeypatch, code, words):
    from trustseg.core.atomic import make_dirs

    def refuse(self, *args, **kwargs):
        raise OSError(code, os.strerror(code), str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(DataError, match=words) as info:
        make_dirs(tmp_path / "out" / "sub")
    assert str(info.value).startswith(str(tmp_path / "out" / "sub")) and "\n" not in str(info.value)
    monkeypatch.undo()
    assert make_dirs(tmp_path / "out" / "sub").is_dir() and make_dirs(tmp_path / "out" / "sub").is_dir()
    with pytest.raises(FileExistsError):  # other errors pass unchanged
        make_dirs(tmp_path / "out", exist_ok=False)


def test_a_full_disk_while_creating_the_prediction_folder_is_named(tmp_path, monkeypatch):
    from trustseg.core.lock import exclusive

    def refuse(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(DataError, match="no space left"):
        with exclusive(tmp_path / "preds", "prediction folder"):
            pass
