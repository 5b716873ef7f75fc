"""Containment of index file paths: inside the folder, '..', absolute paths, symlinks, loops, the opt-ins."""

import os

import pytest

from trustseg.core.errors import DataError
from trustseg.data.paths import ALLOW_OUTSIDE_ENV, contained_path, outside_allowed, outside_allowed_now


@pytest.fixture
def root(tmp_path):
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.npy").write_bytes(b"x")
    r = tmp_path / "a" / "ds"
    (r / "images").mkdir(parents=True)
    (r / "images" / "x.npy").write_bytes(b"x")
    return r


def test_inside_paths_are_returned_unresolved(root):
    (root / "images" / "link.npy").symlink_to(root / "images" / "x.npy")  # a symlink staying inside is fine
    for rel in ("images/x.npy", "images/../images/x.npy", "images/link.npy", "images/missing.npy"):
        assert contained_path(root, rel, root / "dataset.json", "case 'x' image") == root / rel


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "symlinked_dir"])
def test_outside_paths_are_refused_naming_index_case_and_path(root, kind):
    secret = root.parent.parent / "outside" / "secret.npy"
    rel = {"dotdot": "../../outside/secret.npy", "absolute": str(secret)}.get(kind, "images/evil.npy")
    if kind == "symlink":
        (root / "images" / "evil.npy").symlink_to(secret)
    if kind == "symlinked_dir":
        (root / "images" / "sub").symlink_to(secret.parent, target_is_directory=True)
        rel = "images/sub/secret.npy"
    with pytest.raises(DataError, match="lies outside") as e:
        contained_path(root, rel, root / "dataset.json", "case 'x' image")
    assert e.value.path == root / "dataset.json"
    assert "case 'x' image" in e.value.problem and repr(rel) in e.value.problem
    assert contained_path(root, rel, root / "dataset.json", "c", allow_outside=True).resolve() == secret.resolve()


def test_loops_are_left_to_the_reader_and_names_must_be_strings(root):
    (root / "images" / "l1").symlink_to(root / "images" / "l2")
    (root / "images" / "l2").symlink_to(root / "images" / "l1")
    assert contained_path(root, "images/l1", root / "i.json", "c") == root / "images" / "l1"
    for bad in (None, 5, "", ["a"]):
        with pytest.raises(DataError, match="non-empty string"):
            contained_path(root, bad, root / "i.json", "c")


def test_outside_allowed_sets_and_restores_the_environment(root, monkeypatch):
    monkeypatch.delenv(ALLOW_OUTSIDE_ENV, raising=False)
    assert not outside_allowed_now() and outside_allowed_now(True)
    with outside_allowed(False):
        assert not outside_allowed_now()
    with outside_allowed():
        assert os.environ[ALLOW_OUTSIDE_ENV] == "1" and outside_allowed_now()
        assert contained_path(root, "../../outside/secret.npy", root / "i.json", "c").name == "secret.npy"
    assert ALLOW_OUTSIDE_ENV not in os.environ
    monkeypatch.setenv(ALLOW_OUTSIDE_ENV, "0")
    with outside_allowed():
        pass
    assert os.environ[ALLOW_OUTSIDE_ENV] == "0" and not outside_allowed_now()
