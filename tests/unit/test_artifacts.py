"""Artifact directories: manifest written last, digests, incomplete dirs never taken as done."""

from __future__ import annotations

import json

import pytest

from rlt_core import artifacts as A


def test_manifest_makes_a_directory_complete(tmp_path):
    out = A.stage_dir(tmp_path, "data", "abc")
    out.mkdir(parents=True)
    (out / "rows.jsonl").write_text('{"q": 1}\n')
    assert not A.is_complete(out)
    with pytest.raises(FileNotFoundError, match="did not finish"):
        A.load_ref(out)
    ref = A.write_manifest(out, stage="data", config={"n": 1}, upstream={}, metrics={"rows": 1})
    assert A.is_complete(out) and A.load_ref(out) == ref
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["metrics"] == {"rows": 1} and manifest["versions"]["torch"]
    assert not list(out.glob(".*.tmp"))


def test_files_digest_follows_contents_and_names(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    first = A.files_digest(tmp_path)
    (tmp_path / "manifest.json").write_text("{}")  # the manifest itself is not part of it
    assert A.files_digest(tmp_path) == first
    (tmp_path / "a.txt").write_text("y")
    assert A.files_digest(tmp_path) != first


def test_stage_key_changes_with_config_upstream_and_code():
    base = A.stage_key({"lr": 1e-6}, {"data": "d1"}, "c1")
    assert base == A.stage_key({"lr": 1e-6}, {"data": "d1"}, "c1")
    assert base != A.stage_key({"lr": 2e-6}, {"data": "d1"}, "c1")
    assert base != A.stage_key({"lr": 1e-6}, {"data": "d2"}, "c1")
    assert base != A.stage_key({"lr": 1e-6}, {"data": "d1"}, "c2")
