"""Compile the kubelet ``.proto`` files into the committed ``dra_framework.kubelet._proto`` package.

Run ``python -m dra_framework.kubelet.protos.generate`` after editing a ``.proto`` file, or after
changing the pinned ``grpcio-tools`` version; ``--out DIR`` writes the package somewhere else (the
test that keeps the committed modules honest generates into a temporary directory and compares).

What it owns and why it is shaped so:

* One in-process ``grpc_tools.protoc`` run per call, with ``python_out``, ``grpc_python_out`` and
  ``pyi_out``, into a scratch directory.  The sources sit under
  ``protos/dra_framework/kubelet/_proto/...`` and are compiled with ``-I protos``, so the
  generated code names itself
  ``dra_framework.kubelet._proto.<api>.<version>`` wherever ``--out`` points.
* The package's ``__init__.py`` files are generated too, so the output directory is a complete,
  self-contained tree: regenerating it from scratch and comparing file by file is the whole check.
* Deterministic output: fixed source order, fixed ``__init__.py`` text, byte-for-byte copies, and
  stale generated files (``*_pb2*`` modules and stubs, generated ``__init__.py``) removed from the
  output directory; anything else there is left alone.  Only the protoc bundled with the pinned
  ``grpcio-tools`` changes the bytes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from importlib import resources
from pathlib import Path, PurePosixPath

PROTOS_DIR = Path(__file__).resolve().parent
"""The protoc include root: ``.proto`` sources live below it at their import paths."""

PACKAGE_PATH = PurePosixPath("dra_framework/kubelet/_proto")
"""Import path (relative to :data:`PROTOS_DIR`) of the generated package."""

DEFAULT_OUT = PROTOS_DIR.parent / "_proto"
"""Where the committed generated package lives."""

COMMAND = "python -m dra_framework.kubelet.protos.generate"
"""The regeneration command, as users type it."""

INIT_TEXT = f'"""Generated kubelet gRPC modules; do not edit.  Regenerate with ``{COMMAND}``."""\n'
"""Content of every generated ``__init__.py``."""

_GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def proto_sources() -> list[PurePosixPath]:
    """Return the ``.proto`` import paths (relative to :data:`PROTOS_DIR`), sorted."""
    return sorted(
        PurePosixPath(path.relative_to(PROTOS_DIR).as_posix())
        for path in (PROTOS_DIR / PACKAGE_PATH).rglob("*.proto")
    )


def _run_protoc(*, sources: Sequence[PurePosixPath], scratch: Path) -> None:
    from grpc_tools import protoc

    well_known = resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"--proto_path={PROTOS_DIR}",
        f"--proto_path={well_known}",
        f"--python_out={scratch}",
        f"--pyi_out={scratch}",
        f"--grpc_python_out={scratch}",
        *(str(PROTOS_DIR / source) for source in sources),
    ]
    status = protoc.main(args)
    if status != 0:
        raise RuntimeError(f"protoc failed with exit status {status}")


def _collect(*, scratch: Path) -> dict[PurePosixPath, bytes]:
    """Map each generated file (relative to the package) to its bytes, adding ``__init__.py``s."""
    root = scratch / PACKAGE_PATH
    files: dict[PurePosixPath, bytes] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            files[PurePosixPath(path.relative_to(root).as_posix())] = path.read_bytes()
    packages = {PurePosixPath(".")}
    for name in files:
        packages.update(name.parents)
    for package in packages:
        files[package / "__init__.py"] = INIT_TEXT.encode()
    return dict(sorted(files.items()))


def _is_generated(path: Path) -> bool:
    """Whether ``path`` is a file this command writes (so it may remove it when stale)."""
    if path.name == "__init__.py":
        return path.read_text(encoding="utf-8") == INIT_TEXT
    return path.name.endswith(_GENERATED_SUFFIXES)


def _write(*, files: dict[PurePosixPath, bytes], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.is_file() or target.read_bytes() != content:
            target.write_bytes(content)
    for path in sorted(out.rglob("*"), reverse=True):
        if "__pycache__" in path.parts:
            continue
        relative = PurePosixPath(path.relative_to(out).as_posix())
        if path.is_file() and relative not in files and _is_generated(path):
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def generate(*, out: Path = DEFAULT_OUT) -> list[PurePosixPath]:
    """Compile every ``.proto`` source into the package directory ``out``.

    Returns the generated files, relative to ``out``, sorted.  Stale generated files under ``out``
    are removed; other files and ``__pycache__`` directories are left alone.
    """
    sources = proto_sources()
    if not sources:
        raise RuntimeError(f"no .proto files under {PROTOS_DIR / PACKAGE_PATH}")
    with tempfile.TemporaryDirectory(prefix="dra-protoc-") as tmp:
        scratch = Path(tmp)
        _run_protoc(sources=sources, scratch=scratch)
        files = _collect(scratch=scratch)
    _write(files=files, out=out)
    return list(files)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: ``python -m dra_framework.kubelet.protos.generate [--out DIR]``."""
    parser = argparse.ArgumentParser(
        prog=COMMAND, description="Regenerate the dra_framework.kubelet._proto gRPC modules."
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"package directory to write (default: {DEFAULT_OUT})",
    )
    args = parser.parse_args(argv)
    out: Path = args.out
    written = generate(out=out)
    print(f"wrote {len(written)} files to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
