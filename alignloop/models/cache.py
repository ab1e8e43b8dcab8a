"""Where alignloop keeps what it converts, and how it writes there without leaving half a folder.

Converted built-in models and extracted tokenizers live under one home folder:
`$ALIGNLOOP_HOME`, else `$XDG_CACHE_HOME/alignloop`, else `~/.cache/alignloop`. The variable is
read on every call rather than once at import so that tests (and a CLI `--home` option) can
point it elsewhere after alignloop has been imported.

A folder there counts as ready only once it exists under its final name, and it gets that name
by one `rename` of a fully written sibling folder. A conversion that is interrupted (Ctrl-C, a
killed job, a full disk) therefore leaves only a hidden `.<name>.partial-*` folder behind, never
a half-written folder that a later run would mistake for a finished one. Two processes that
prepare the same folder at once both succeed: the first rename wins and the second process
discards its own copy.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["alignloop_home", "write_folder_atomically"]


def alignloop_home() -> Path:
    """The folder that holds alignloop's caches (converted models, extracted tokenizers)."""
    explicit = os.environ.get("ALIGNLOOP_HOME")
    if explicit:
        return Path(explicit).expanduser()
    cache_root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache_root).expanduser() / "alignloop"


def write_folder_atomically(target: Path, write: Callable[[Path], None], *, replace: bool = False) -> Path:
    """Call `write(scratch_folder)`, then move the finished folder to `target` in one rename.

    With `replace=False` an existing `target` (perhaps finished meanwhile by another process)
    is kept and the new copy discarded; with `replace=True` the new copy takes its place.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        write(scratch)
        _make_shareable(scratch)
        if replace and target.exists():
            _move_aside_and_delete(target)
        try:
            scratch.rename(target)
        except OSError:
            # rename(2) refuses a non-empty destination: another process finished the same
            # folder between our check and our rename. Its copy is as good as ours; keep it.
            if not target.is_dir():
                raise
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
    return target


def _make_shareable(folder: Path) -> None:
    # mkdtemp makes the folder private (0700) and some writers (safetensors) make private
    # files; give the finished folder the permissions any new folder and file would get, so
    # that a cache shared between users stays readable.
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _move_aside_and_delete(folder: Path) -> None:
    # Rename first so that the old folder stops looking ready at once, then delete at leisure.
    doomed = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
    folder.rename(doomed / folder.name)
    shutil.rmtree(doomed, ignore_errors=True)
