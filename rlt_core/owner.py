"""One owner per stage run: its key, its lease, "already finished?", its work area, its publish.

A stage run is the store's transaction. `own(key, store, body)` is the only code that opens
one; the stage entry functions (`body`) do the stage's work in the directory they are given
and return their figures, nothing else:

1. **Finished?** `<store>/<stage>/<key>/` holding its manifest is a finished artifact: it is
   returned as it is. Only step 5 ever creates that directory, whole, so anything there is
   finished and is never modified or removed afterwards.
2. **Lease.** At most one computation of a key at a time: an exclusive `fcntl.flock` on
   `<store>/.locks/<stage>-<key>.lock`, held for the whole run. A second run of the same key
   (another thread, process or flow run on this machine) waits, then finds step 1 true and
   returns the first run's artifact. The kernel drops the lock when its holder dies (a kill, a
   crash), so a dead holder leaves nothing to expire: the next run takes the lease at once and
   resumes the work area. A stage launched as a child process (`launch`) runs under its
   parent's lease (`LEASE_ENV` names the key), so the processes of one `accelerate launch`
   never wait on each other. Several nodes sharing one S3 store take the remote lease of
   `rlt_core.store` on top of this one.
3. **Work area.** `<store>/.work/<stage>/<key>/`: the body writes the artifact's files into
   `work.out` and keeps what only a resume needs (trainer checkpoints, shards) under
   `work.root`. It survives a kill, so a rerun resumes there.
4. **Body.** `body(work)` returns an `Outcome` (figures and resolved config for the manifest).
5. **Publish.** Every file is flushed to disk, the manifest is written LAST into `work.out`,
   then `work.out` is renamed to `<store>/<stage>/<key>/` (atomic) and only then is the work
   area (checkpoints included) removed. A kill before the rename leaves the work area with its
   checkpoints, so nothing is lost; a kill after it leaves a finished artifact. A work area
   whose manifest was written but not yet moved is moved by the next run (`recover`).

Only the main process of a multi-process run (RANK 0) publishes.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlt_core import artifacts
from rlt_core.artifacts import ArtifactRef, StageKey

logger = logging.getLogger(__name__)

WORK_DIR = ".work"
LOCKS_DIR = ".locks"
LEASE_ENV = "RLT_STAGE_LEASE"  # set by a parent that holds the lease of the key it names


@dataclass(frozen=True)
class Outcome:
    """What a stage body hands back: its figures, and the config it resolved beyond its key
    (trainer arguments, the input paths as given), both recorded in the manifest."""

    metrics: Mapping[str, Any]
    config: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Work:
    """A stage run's work area (module docstring, step 3)."""

    key: StageKey
    root: Path

    @property
    def out(self) -> Path:
        """Where the body writes the artifact's files (renamed into place when published)."""
        return self.root / "artifact"

    def fresh(self) -> Path:
        """`out`, emptied first: for stages that start over instead of resuming (cheap ones)."""
        shutil.rmtree(self.out, ignore_errors=True)
        self.out.mkdir(parents=True)
        return self.out


def work_dir(store: str | Path, stage: str, digest: str) -> Path:
    """`<store>/.work/<stage>/<digest>`: where an unfinished run of that key works."""
    return Path(store).expanduser() / WORK_DIR / stage / digest


def is_main_process() -> bool:
    """Whether this process publishes (RANK 0, or not a multi-process run)."""
    return os.environ.get("RANK", "0") == "0"


class StageRun:
    """The owner of one stage run in a local (working) store (module docstring)."""

    def __init__(self, key: StageKey, store: str | Path) -> None:
        self.key = key
        self.store = Path(store).expanduser()
        self.final = key.dir(self.store)
        self.work = Work(key, work_dir(self.store, key.stage, key.digest))

    def finished(self) -> ArtifactRef | None:
        """The finished artifact of this key, or None."""
        return artifacts.load_ref(self.final) if artifacts.is_complete(self.final) else None

    @contextmanager
    def lease(self) -> Iterator[None]:
        """Hold the key's lease (module docstring, step 2); waits while another run holds it.
        A no-op when the parent process holds it for this very key."""
        if os.environ.get(LEASE_ENV) == self.key.cache_key or not is_main_process():
            yield
            return
        path = self.store / LOCKS_DIR / f"{self.key.cache_key}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                logger.info("%s: %s runs this key; waiting for it", self.key.cache_key, holder)
                fcntl.flock(handle, fcntl.LOCK_EX)
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            handle.flush()
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def recover(self) -> ArtifactRef | None:
        """Finish the publish of a run killed between its manifest and the rename: a work
        area whose manifest matches its files is moved into place; a manifest that does not
        match (it cannot vouch for these files) is dropped and the run goes on."""
        out = self.work.out
        if not artifacts.is_complete(out):
            return None
        if artifacts.files_digest(out) == artifacts.read_manifest(out)["digest"]:
            logger.info("%s: publishing what a killed run had finished", self.key.cache_key)
            return self._move_into_place()
        (out / artifacts.MANIFEST).unlink()
        return None

    def publish(self, outcome: Outcome) -> ArtifactRef:
        """Flush the body's files, write the manifest last, move the artifact into place."""
        out = self.work.out
        artifacts.sync_tree(out)
        artifacts.write_manifest(
            out,
            stage=self.key.stage,
            config={**self.key.config, **outcome.config},
            upstream=self.key.upstream,
            metrics=dict(outcome.metrics),
            key=self.key,
        )
        return self._move_into_place()

    def _move_into_place(self) -> ArtifactRef:
        self.final.parent.mkdir(parents=True, exist_ok=True)
        if self.final.exists():  # unfinished (step 1 said so): an older layout's leftover
            self.final.rename(self.work.root / f"stale-{uuid.uuid4().hex[:8]}")
        os.rename(self.work.out, self.final)
        artifacts.fsync_dir(self.final.parent)
        shutil.rmtree(self.work.root, ignore_errors=True)
        logger.info("%s: published %s", self.key.cache_key, self.final)
        return artifacts.load_ref(self.final)


Body = Callable[[Work], Outcome]
Launch = Callable[[Mapping[str, str]], Any]


def own(
    key: StageKey, store: str | Path, body: Body, *, launch: Launch | None = None
) -> ArtifactRef:
    """Run `body` as the one owner of `key` in `store` and return the finished artifact
    (module docstring). With `launch`, the work runs in a child process instead: `launch(env)`
    starts it with `env` added to its environment (the lease it runs under) and waits."""
    run = StageRun(key, store)
    if (ref := run.finished()) is not None:
        return ref
    with run.lease():
        if (ref := run.finished()) is not None:
            return ref
        if is_main_process() and (ref := run.recover()) is not None:
            return ref
        if launch is not None:
            launch({LEASE_ENV: key.cache_key})
            if (ref := run.finished()) is None:
                raise RuntimeError(
                    f"the {key.stage} process exited cleanly but published nothing at "
                    f"{run.final}; its log above says why. Run the stage again."
                )
            return ref
        run.work.out.mkdir(parents=True, exist_ok=True)
        outcome = body(run.work)
        if not is_main_process():
            return ArtifactRef(uri=str(run.final), digest="")  # the main process publishes
        return run.publish(outcome)
