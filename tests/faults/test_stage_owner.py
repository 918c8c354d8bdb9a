"""One owner per stage run, on a local store: real processes, real SIGKILLs, stub stages.

A stub stage is `rlt_core.owner.own` with a body that writes a file and, where a test needs
the processes to overlap, sleeps: the owner's behaviour does not depend on what the body
trains, and these tests run in seconds. Each child is `python -c` on `_CHILD` (below)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rlt_core import artifacts
from rlt_core.artifacts import StageKey
from rlt_core.owner import Outcome, Work, own, work_dir

pytestmark = pytest.mark.faults
ROOT = Path(__file__).resolve().parents[2]
KEY = StageKey("stub", {"rows": 3}, {"corpus": "abc"}, "code")

# A child that owns KEY in argv[1]. Its body logs that it ran (argv[2]), resumes from the
# "checkpoint" a killed run left, sleeps argv[3] seconds, writes the artifact. argv[4] names a
# point where it stops itself to be killed: "manifest" (publishing, before the manifest),
# "rename" (the manifest written, before the artifact moves into place), or "none".
_CHILD = """
import json, os, sys, time
from pathlib import Path
from rlt_core import artifacts, owner
from rlt_core.artifacts import StageKey
from rlt_core.owner import Outcome, own

store, log, seconds, stop_at = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
key = StageKey("stub", {"rows": 3}, {"corpus": "abc"}, "code")

def pause(real):
    def paused(*args, **kwargs):
        (store / f"at-{stop_at}").write_text(str(os.getpid()))
        time.sleep(600)
        return real(*args, **kwargs)
    return paused

if stop_at == "manifest":
    artifacts.write_manifest = pause(artifacts.write_manifest)
elif stop_at == "rename":
    owner.os.rename = pause(os.rename)

def body(work):
    with log.open("a") as handle:
        handle.write(f"{os.getpid()}\\n")
    step = work.root / "checkpoints" / "step-1"
    resumed = step.is_file()
    step.parent.mkdir(parents=True, exist_ok=True)
    step.write_text("state")
    time.sleep(seconds)
    (work.out / "rows.txt").write_text("a\\nb\\nc\\n")
    return Outcome({"resumed": resumed})

print(json.dumps(own(key, store, body).to_dict()))
"""


def _child(store: Path, log: Path, seconds: float = 0.0, stop_at: str = "none") -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", _CHILD, str(store), str(log), str(seconds), stop_at]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _ref(child: subprocess.Popen) -> dict:
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err.decode()[-2000:]
    return json.loads(out.decode().strip().splitlines()[-1])


def _kill_at(store: Path, log: Path, point: str) -> None:
    child = _child(store, log, stop_at=point)
    deadline = time.monotonic() + 60
    while not (store / f"at-{point}").is_file():
        assert child.poll() is None, child.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, f"the child never reached {point}"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()


def test_two_processes_one_key_one_computes_the_other_gets_its_ref(tmp_path: Path) -> None:
    store, log = tmp_path / "store", tmp_path / "ran.log"
    first, second = _child(store, log, seconds=2.0), _child(store, log, seconds=2.0)
    refs = [_ref(first), _ref(second)]
    assert len(log.read_text().split()) == 1  # one body ran; the other process waited
    assert refs[0] == refs[1]
    final = Path(refs[0]["uri"])
    assert final == KEY.dir(store) and artifacts.read_manifest(final)["digest"] == refs[0]["digest"]
    assert artifacts.files_digest(final) == refs[0]["digest"]  # the manifest vouches for them
    assert not work_dir(store, KEY.stage, KEY.digest).exists()


def test_threads_of_one_process_share_the_lease_too(tmp_path: Path) -> None:
    ran: list[int] = []

    def body(work: Work) -> Outcome:
        ran.append(threading.get_ident())
        time.sleep(0.5)
        (work.out / "x").write_text("x")
        return Outcome({})

    refs: list = []
    threads = [threading.Thread(target=lambda: refs.append(own(KEY, tmp_path, body)))
               for _ in range(3)]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(ran) == 1 and len(set(refs)) == 1


def test_killed_while_publishing_loses_nothing_and_resumes(tmp_path: Path) -> None:
    store, log = tmp_path / "store", tmp_path / "ran.log"
    _kill_at(store, log, "manifest")
    work = work_dir(store, KEY.stage, KEY.digest)
    assert not KEY.dir(store).exists()  # nothing published ...
    assert (work / "checkpoints" / "step-1").is_file()  # ... and the checkpoint is kept
    ref = _ref(_child(store, log))
    manifest = artifacts.read_manifest(ref["uri"])
    assert manifest["metrics"] == {"resumed": True}  # the rerun started from the checkpoint
    assert artifacts.files_digest(ref["uri"]) == ref["digest"] and not work.exists()


def test_killed_between_manifest_and_rename_is_published_without_running_again(
    tmp_path: Path,
) -> None:
    store, log = tmp_path / "store", tmp_path / "ran.log"
    _kill_at(store, log, "rename")
    work = work_dir(store, KEY.stage, KEY.digest)
    assert artifacts.is_complete(work / "artifact") and not KEY.dir(store).exists()

    def must_not_run(work: Work) -> Outcome:
        raise AssertionError("the finished work area was computed again")

    ref = own(KEY, store, must_not_run)
    assert Path(ref.uri) == KEY.dir(store) and artifacts.files_digest(ref.uri) == ref.digest
    assert len(log.read_text().split()) == 1 and not work.exists()


def test_a_finished_artifact_is_never_written_again(tmp_path: Path) -> None:
    ref = own(KEY, tmp_path, lambda work: ((work.out / "x").write_text("1"), Outcome({}))[1])
    before = {p: p.stat().st_mtime_ns for p in Path(ref.uri).rglob("*")}
    again = own(KEY, tmp_path, lambda work: pytest.fail("a finished key ran again"))
    assert again == ref and {p: p.stat().st_mtime_ns for p in Path(ref.uri).rglob("*")} == before


def test_concurrent_atomic_writes_never_collide_and_leave_no_temporary_files(
    tmp_path: Path,
) -> None:
    target, errors = tmp_path / "a" / "manifest.json", []
    target.parent.mkdir()

    def write(text: str) -> None:
        try:
            for _ in range(50):
                artifacts.write_atomic(target, lambda tmp: tmp.write_text(text * 1000))
        except Exception as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=write, args=(c,)) for c in "xyz"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and target.read_text() in {c * 1000 for c in "xyz"}
    assert [p.name for p in target.parent.iterdir()] == ["manifest.json"]


def test_a_leftover_temporary_file_is_neither_digested_nor_published(tmp_path: Path) -> None:
    out = tmp_path / "art"
    out.mkdir()
    (out / "rows.txt").write_text("a")
    clean = artifacts.files_digest(out)
    (out / ".rows.txt.tmp-123-deadbeef").write_text("half")  # a killed writer's leftover
    assert artifacts.files_digest(out) == clean
    assert [p.name for p in artifacts.artifact_files(out)] == ["rows.txt"]
