"""Build-once model directories: write into a temporary sibling, record provenance LAST, rename.

A directory counts as finished only when its provenance file `rlt_model.json` exists. A run that is
killed half-way leaves a hidden `.<name>.tmp-*` sibling (or, for a directory written by hand, a
folder without the provenance file); neither is ever taken as finished, and the next build removes
it and starts again. A file lock on `.<name>.lock` keeps two processes (say, two pytest workers)
from building the same directory at once.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PROVENANCE_FILE = "rlt_model.json"


def default_models_dir() -> Path:
    """Return the default cache root for materialised models: `$RLT_HOME/models`.

    `RLT_HOME` defaults to `~/.cache/rlt`.
    """
    return Path(os.environ.get("RLT_HOME", "~/.cache/rlt")).expanduser() / "models"


def is_finished(model_dir: Path) -> bool:
    """Return True when `model_dir` holds its provenance file, which a build writes last."""
    return (model_dir / PROVENANCE_FILE).is_file()


def read_provenance(model_dir: Path) -> dict[str, Any]:
    """Return the provenance record of a finished model directory.

    Raises FileNotFoundError (naming the directory) when the build never finished.
    """
    path = model_dir / PROVENANCE_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{model_dir} has no {PROVENANCE_FILE}: its build did not finish. "
            "Build it again (the materialise functions take force=True) or delete the directory."
        )
    return json.loads(path.read_text())


def build_once(
    final_dir: Path, build: Callable[[Path], dict[str, Any]], *, force: bool = False
) -> Path:
    """Build `final_dir` with `build` unless it is already finished; return `final_dir`.

    `build(tmp_dir)` writes every file into an empty temporary sibling directory and returns the
    provenance record; this function adds the creation time, writes the record LAST, and renames
    the temporary directory into place. A finished directory returns at once unless `force`.
    """
    final_dir = Path(final_dir)
    if is_finished(final_dir) and not force:
        return final_dir
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(final_dir):
        if is_finished(final_dir) and not force:  # another process finished it meanwhile
            return final_dir
        _remove_leftovers(final_dir)
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.tmp-", dir=final_dir.parent))
        tmp_dir.chmod(0o755)  # mkdtemp makes it private; the cache is meant to be shared
        try:
            _build_and_record(tmp_dir, build)
            if final_dir.exists():
                logger.info("Replacing %s", final_dir)
                shutil.rmtree(final_dir)
            tmp_dir.rename(final_dir)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    return final_dir


def _build_and_record(tmp_dir: Path, build: Callable[[Path], dict[str, Any]]) -> None:
    """Run `build` into `tmp_dir`, then write the provenance file (the last file written)."""
    start = time.monotonic()
    provenance = dict(build(tmp_dir))
    provenance["created"] = datetime.now(UTC).isoformat(timespec="seconds")
    provenance["build_seconds"] = round(time.monotonic() - start, 1)
    (tmp_dir / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")


def _remove_leftovers(final_dir: Path) -> None:
    """Delete temporary siblings of killed builds and an unfinished `final_dir` (lock held)."""
    for leftover in final_dir.parent.glob(f".{final_dir.name}.tmp-*"):
        logger.warning("Removing %s, left over from a build that did not finish", leftover)
        shutil.rmtree(leftover, ignore_errors=True)
    if final_dir.exists() and not is_finished(final_dir):
        logger.warning("%s has no %s: rebuilding it", final_dir, PROVENANCE_FILE)


@contextmanager
def _build_lock(final_dir: Path) -> Iterator[None]:
    """Hold an exclusive file lock on `.<name>.lock` beside `final_dir` while building."""
    lock_path = final_dir.parent / f".{final_dir.name}.lock"
    with open(lock_path, "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
