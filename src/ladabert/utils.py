"""Small shared helpers: atomic output directories, JSON writing, machine and version info."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ladabert.errors import LadaBertError


def check_length(length: int, positions: int | None, model: str, flag: str = "--max-length") -> None:
    """Refuse a sequence length past a model's position embeddings (``positions``; None: not known): no
    graph of it runs at that length."""
    if positions is not None and length > positions:
        raise LadaBertError(
            f"{flag} {length} exceeds {model}'s {positions} position embeddings; pass {flag} {positions} or less"
        )


def check_writable_dir(path: str | os.PathLike, what: str = "--out") -> Path:
    """Make sure ``path`` can be created: its nearest existing ancestor is a writable directory. Nothing is
    created here (see :func:`make_parents`), so a command that fails later leaves no new directories.

    Raises:
        LadaBertError: naming the path and the fix when it cannot be written.
    """
    path = Path(path).expanduser().absolute()
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    problem = None
    if not ancestor.is_dir():
        problem = f"{ancestor} is not a directory"
    elif not os.access(ancestor, os.W_OK | os.X_OK):
        problem = f"{ancestor} is not writable"
    if problem:
        raise LadaBertError(f"cannot write {what} {path}: {problem}; choose a {what} in a writable directory")
    return path


def make_parents(path: Path) -> list[Path]:
    """Create ``path``'s missing parent directories; returns the ones created, outermost first."""
    missing = []
    parent = path.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    try:
        for d in reversed(missing):
            d.mkdir()
    except OSError as exc:
        raise LadaBertError(
            f"cannot create {d}: {exc.strerror or exc}; choose a --out in a writable directory"
        ) from None
    return list(reversed(missing))


def remove_empty(dirs: list[Path]) -> None:
    """Remove the directories :func:`make_parents` created, innermost first, where they are still empty."""
    for d in reversed(dirs):
        with contextlib.suppress(OSError):
            d.rmdir()


def check_not_input(out: str | os.PathLike, inputs: list[Any], what: str = "--out") -> None:
    """Refuse an output that is, lies inside, or contains one of the command's inputs (even with
    ``--overwrite``: replacing it would destroy the input)."""
    target = Path(out).expanduser().resolve()
    for item in inputs:
        if item is None:
            continue
        src = Path(item).expanduser()
        if not src.exists():
            continue
        src = src.resolve()
        if target == src or src.is_relative_to(target) or target.is_relative_to(src):
            relation = "is" if target == src else ("contains" if src.is_relative_to(target) else "is inside")
            raise LadaBertError(
                f"{what} {target} {relation} the input {src}; choose a {what} outside the inputs "
                "(--overwrite never replaces an input)"
            )


def check_output_file(out: str | os.PathLike, inputs: list[Any], what: str = "--out") -> None:
    """Before any work: a file output can be written (its directory is writable, it is not a directory)
    and is none of the inputs."""
    path = check_writable_dir(out, what)
    if path.is_dir():
        raise LadaBertError(f"{what} {path} is a directory; pass a file path, e.g. {path / 'results.json'}")
    check_not_input(path, inputs, what)


@contextlib.contextmanager
def atomic_output_dir(
    out: str | os.PathLike, overwrite: bool = False, inputs: list[Any] = ()
) -> Iterator[Path]:
    """Yield a temporary directory beside ``out`` that is renamed to ``out`` only on success.

    On any exception the temporary directory is removed, so a crash never leaves a half-written
    ``out``. An existing ``out`` is replaced only when ``overwrite`` is true: moved aside, and removed only
    once the new one is in place. ``out`` may not overlap any of ``inputs`` (:func:`check_not_input`).
    """
    check_not_input(out, list(inputs))
    out = check_writable_dir(out)
    if out.exists() and not overwrite:
        raise LadaBertError(f"{out} already exists; pass --overwrite to replace it or choose another --out")
    created = make_parents(out)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        remove_empty(created)
        raise
    old = None
    try:
        if out.exists():
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            out.rename(old)
        tmp.rename(out)
    except OSError as exc:
        if old is not None and not out.exists():
            old.rename(out)  # put the previous output back
        shutil.rmtree(tmp, ignore_errors=True)
        raise LadaBertError(
            f"cannot move the new output into {out}: {exc.strerror or exc}; check the directory"
        ) from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` through a temporary file and a rename, so that no reader sees half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON through a temporary file and a rename."""
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose behaviour changes the numbers we report."""
    from importlib import metadata

    import ladabert

    # ladabert's own version from the source, not the install metadata: an editable install keeps the
    # version it was installed with
    out = {"python": platform.python_version(), "ladabert": ladabert.__version__}
    for name in (
        "torch",
        "transformers",
        "accelerate",
        "onnx",
        "onnxruntime",
        "optimum",
        "triton",
    ):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def cpu_info() -> dict[str, Any]:
    """The CPU model, core count and the ISA flags that matter for inference speed."""
    model, flags = platform.processor() or platform.machine(), set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and ":" in line:
                flags = set(line.split(":", 1)[1].split())
    wanted = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"]
    return {"cpu": model, "cores": os.cpu_count(), "flags": [f for f in wanted if f in flags]}


def device_description() -> str:
    """A human-readable name of where compute runs: the GPU name, or the CPU model and core count."""
    try:
        import torch

        if torch.cuda.is_available():
            return f"cuda:{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    except ImportError:
        pass
    info = cpu_info()
    return f"cpu:{info['cpu']} ({info['cores']} cores)"


def git_sha() -> str | None:
    """The commit of the checkout this package runs from, if it runs from one."""
    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                cwd=Path(__file__).resolve().parent,
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        return None


def run_environment() -> dict[str, Any]:
    """Machine, device, versions and git sha, recorded with every metrics and benchmark file."""
    return {
        "device": device_description(),
        "machine": {**cpu_info(), "platform": platform.platform()},
        "versions": library_versions(),
        "git_sha": git_sha(),
    }
