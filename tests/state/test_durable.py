"""Durable writes and safe reads never go through a link or block on a FIFO."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from dra_framework.durable import NotRegularFileError, atomic_write, read_regular


def test_atomic_write_replaces_the_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    atomic_write(target, b"one")
    atomic_write(target, b"two" * 100_000)
    assert target.read_bytes() == b"two" * 100_000
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_link_at_the_target_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    target = tmp_path / "state.json"
    target.symlink_to(victim)
    atomic_write(target, b"new")
    assert victim.read_text() == "keep me"
    assert not target.is_symlink() and target.read_bytes() == b"new"


def test_a_link_planted_at_the_temporary_name_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    target = tmp_path / "state.json"
    tmp = tmp_path / f".tmp-state.json.{os.getpid()}.{threading.get_ident()}.part"
    tmp.symlink_to(victim)
    atomic_write(target, b"new")
    assert victim.read_text() == "keep me"
    assert target.read_bytes() == b"new" and not tmp.exists()


def test_read_regular_reads_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x" * 200_000)
    assert read_regular(tmp_path / "f") == b"x" * 200_000
    with pytest.raises(FileNotFoundError):
        read_regular(tmp_path / "missing")


@pytest.mark.parametrize("kind", ["symlink", "directory", "fifo"])
def test_read_regular_refuses_anything_but_a_regular_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "entry"
    if kind == "symlink":
        (tmp_path / "victim").write_text("secret")
        path.symlink_to(tmp_path / "victim")
    elif kind == "directory":
        path.mkdir()
    else:
        os.mkfifo(path)  # a FIFO would block a plain read forever
    with pytest.raises(NotRegularFileError):
        read_regular(path)


def test_write_file_replaces_a_link_instead_of_writing_through_it(tmp_path: Path) -> None:
    from dra_framework.durable import write_file

    victim = tmp_path / "victim"
    victim.write_text("keep me")
    target = tmp_path / "state.json"
    target.symlink_to(victim)
    write_file(target, b"new")
    assert victim.read_text() == "keep me"
    assert not target.is_symlink() and target.read_bytes() == b"new"
    write_file(target, b"shorter")
    assert target.read_bytes() == b"shorter"
    (tmp_path / "dir").mkdir()
    with pytest.raises(IsADirectoryError):
        write_file(tmp_path / "dir", b"x")
