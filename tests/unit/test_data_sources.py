"""Reading raw tables: local formats, shard directories, s3:// on real (moto) S3, Hub ids."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from rlt_core.data.sources import (
    HubSource,
    SourceUnavailableError,
    parse_hub_id,
    read_table,
    require_columns,
    source_name,
)

DATA = Path(__file__).parents[1] / "fixtures" / "data"


def test_jsonl_and_parquet_give_the_same_bespoke_table():
    from_jsonl = read_table(str(DATA / "bespoke_sample.jsonl"))
    from_parquet = read_table(str(DATA / "bespoke_sample.parquet"))
    assert list(from_jsonl.columns) == ["system", "conversations"] == list(from_parquet.columns)
    assert len(from_jsonl) == len(from_parquet) == 7
    first_turns = from_parquet["conversations"][0]  # parquet gives an array of dicts
    assert [turn["from"] for turn in first_turns] == ["user", "assistant"]
    assert from_jsonl["conversations"][0] == [dict(turn) for turn in first_turns]


def test_json_values_keep_their_types(tmp_path):
    # "033" must stay a string (an AIME-style answer), not become the integer 33.
    records = [{"answer": "033", "n": 1}, {"answer": "7", "n": 2}]
    array = tmp_path / "array.json"
    array.write_text(json.dumps(records))
    lines = tmp_path / "lines.json"  # `datasets.to_json` writes JSON lines under .json
    lines.write_text("\n".join(json.dumps(r) for r in records))
    for path in (array, lines):
        table = read_table(str(path))
        assert table["answer"].to_list() == ["033", "7"]
        assert table["n"].to_list() == [1, 2]


def test_csv_reads_strings_and_keeps_empty_cells_empty(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b\n007,\nNA,x\n")
    table = read_table(str(path))
    assert table.to_dict("list") == {"a": ["007", "NA"], "b": ["", "x"]}


def test_shard_directory_is_read_in_sorted_shard_order():
    table = read_table(str(DATA / "qs_shards"))
    # part-00000 holds shard-a, shard-b; part-00001 holds shard-c
    assert table["id"].to_list() == ["shard-a", "shard-b", "shard-c"]
    assert table.index.to_list() == [0, 1, 2]


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_table(str(missing))


def test_directory_without_shards_is_an_error(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="no .parquet shards"):
        read_table(str(tmp_path))


def test_unknown_extension_lists_the_accepted_ones(tmp_path):
    path = tmp_path / "rows.txt"
    path.write_text("hello")
    with pytest.raises(ValueError, match=r"'\.txt'.*\.jsonl, \.json, \.parquet, \.csv"):
        read_table(str(path))


def test_bad_json_line_names_the_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(ValueError, match="line 2"):
        read_table(str(path))


def test_require_columns_names_missing_and_present_columns():
    df = pd.DataFrame({"problem": ["q"], "answer": ["a"]})
    with pytest.raises(ValueError) as info:
        require_columns(df, ["question", "answer"], source="x.jsonl", hint="Set question_column.")
    message = str(info.value)
    assert "['question']" in message and "['problem', 'answer']" in message
    assert "Set question_column." in message


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("bespokelabs/Bespoke-Stratos-17k", HubSource("bespokelabs/Bespoke-Stratos-17k", "train")),
        ("HuggingFaceH4/MATH-500:test", HubSource("HuggingFaceH4/MATH-500", "test")),
        ("data/rows.jsonl", None),  # a file extension means a path
        ("s3://bucket/key", None),  # a scheme means a URI
        ("just-a-name", None),
        ("a/b/c", None),
    ],
)
def test_parse_hub_id(source, expected):
    assert parse_hub_id(source) == expected


def test_existing_local_directory_wins_over_hub_id(tmp_path, monkeypatch):
    # "org/name" that exists on disk is read from disk, never from the Hub
    local = tmp_path / "org" / "name"
    local.mkdir(parents=True)
    shutil.copy(DATA / "qs_shards" / "part-00000.parquet", local / "part-00000.parquet")
    monkeypatch.chdir(tmp_path)
    assert read_table("org/name")["id"].to_list() == ["shard-a", "shard-b"]


def test_unreachable_hub_id_names_the_id_and_suggests_a_local_copy(monkeypatch):
    import datasets.config
    import huggingface_hub.constants

    # Offline mode makes `load_dataset` fail at once instead of retrying DNS for ~25 s.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(SourceUnavailableError) as info:
        read_table("bespokelabs/Bespoke-Stratos-17k:train")
    message = str(info.value)
    assert "'bespokelabs/Bespoke-Stratos-17k'" in message and "split 'train'" in message
    assert "to_parquet" in message and "local path" in message


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("tests/fixtures/data/bespoke_sample.jsonl", "bespoke_sample"),
        ("s3://bucket/prefix/rows.parquet", "rows"),
        ("s3://bucket/shards/", "shards"),
        ("bespokelabs/Bespoke-Stratos-17k:train", "Bespoke-Stratos-17k"),
    ],
)
def test_source_name(source, name):
    assert source_name(source) == name


def test_s3_parquet_and_jsonl_through_storage_options(s3_server, s3_bucket, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)  # only storage_options point at moto
    for file in ("bespoke_sample.parquet", "limr_sample.jsonl"):
        uri = s3_server.upload(s3_bucket, f"raw/{file}", str(DATA / file))
        remote = read_table(uri, storage_options=s3_server.storage_options)
        local = read_table(str(DATA / file))
        assert remote.drop(columns="conversations", errors="ignore").equals(
            local.drop(columns="conversations", errors="ignore")
        )
        assert len(remote) == len(local)


def test_s3_shard_directory_through_env_endpoint(s3_env, s3_bucket):
    for shard in ("part-00001.parquet", "part-00000.parquet"):  # upload order does not matter
        s3_env.upload(s3_bucket, f"shards/{shard}", str(DATA / "qs_shards" / shard))
    table = read_table(f"s3://{s3_bucket}/shards")
    assert table["id"].to_list() == ["shard-a", "shard-b", "shard-c"]


def test_s3_missing_key_names_the_uri(s3_server, s3_bucket):
    uri = f"s3://{s3_bucket}/absent.jsonl"
    with pytest.raises(FileNotFoundError, match=uri):
        read_table(uri, storage_options=s3_server.storage_options)
