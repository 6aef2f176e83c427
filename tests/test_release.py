"""Releases through the registry: versions served by alias or by exact version and sha256,
checked before they load; a candidate beside production (shadow, canary) with every answer naming
its model; the rule that rolls a worse candidate back or promotes a clean one; and the release
command that moves the aliases by hand."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from lab_code import images, registry
from lab_code.artifacts import (
    MODEL_FILE,
    ONNX_FILE,
    RegistryError,
    bundled_model_path,
    bundled_onnx_path,
    model_version,
    read_aliases,
    sha256_file,
)
from lab_code.recognizer import TextRecognizer, model_file, onnx_available
from lab_code.serving import model_source, release, rollout
from lab_code.serving.rollout import CANDIDATE, PRODUCTION, Plan, RolloutRules, Snapshot, judge
from lab_code.serving.worker import ModelWorker
from lab_code.training.degrade import degrade
from lab_code.training.stage_model import stage_file

ROOT = Path(__file__).resolve().parents[1]
REALWORLD = ROOT / "tests" / "data" / "realworld"
NAME = "text-recognizer"


@pytest.fixture(scope="module")
def staged(tmp_path_factory) -> dict:
    """A registry with v1 = the bundled model (production), v2 = the same made much worse on
    purpose, v3 = the same with a trace of noise (reads alike, a different file)."""
    reg = tmp_path_factory.mktemp("registry")
    work = tmp_path_factory.mktemp("models")
    v1 = stage_file(bundled_model_path(), NAME, PRODUCTION, reg)
    v2 = stage_file(degrade(None, work / "worse.pt", noise=0.4), NAME, "latest", reg)
    v3 = stage_file(degrade(None, work / "close.pt", noise=0.01, seed=3), NAME, "latest", reg)
    return {"registry": reg, "v1": v1, "v2": v2, "v3": v3}


@pytest.fixture()
def reg(staged, tmp_path) -> Path:
    """A fresh copy of the staged registry for a test that moves aliases."""
    import shutil

    copy = tmp_path / "registry"
    shutil.copytree(staged["registry"], copy)
    return copy


@pytest.fixture(scope="module")
def lines() -> list[np.ndarray]:
    records = json.loads((REALWORLD / "labels.json").read_text())
    chosen = [r for r in records if r["family"] in ("screenshot", "unseen_font")][:80]
    out = []
    for record in chosen:
        out += images.lines_from((REALWORLD / record["file"]).read_bytes(), name="x")
    return out


def load(served: model_source.ServedModel) -> ModelWorker:
    return ModelWorker(TextRecognizer(served.path, threads=1))


# --- versions, checked ----------------------------------------------------------------------------
def test_resolve_by_alias_and_by_exact_version_and_sha256(staged):
    reg, v2 = staged["registry"], staged["v2"]
    path, manifest = registry.resolve(NAME, alias=PRODUCTION, registry=reg)
    assert manifest["version"] == "v1" and sha256_file(path) == staged["v1"]["sha256"]
    path, manifest = registry.resolve(NAME, version="v2", registry=reg, sha256=v2["sha256"][:12])
    assert manifest["sha256"] == v2["sha256"]
    with pytest.raises(RegistryError, match="not 0937"):
        registry.resolve(NAME, version="v2", registry=reg, sha256="0937541a2900")
    with pytest.raises(RegistryError, match="at least 12"):
        registry.resolve(NAME, version="v2", registry=reg, sha256=v2["sha256"][:8])
    with pytest.raises(RegistryError, match="No version v9"):
        registry.resolve(NAME, version="v9", registry=reg)


def test_a_changed_file_is_refused_before_it_loads(reg):
    staged_file = reg / NAME / "v2" / "text_recognizer.pt"
    staged_file.write_bytes(staged_file.read_bytes() + b"x")
    with pytest.raises(RegistryError, match="damaged or was changed"):
        model_source.from_registry(NAME, version="v2", registry_dir=reg)


def test_a_file_is_held_to_its_manifest_and_the_expected_version(staged, tmp_path, monkeypatch):
    bundled = model_source.from_file(bundled_model_path())
    assert bundled.release == "v1" and bundled.name == NAME and len(bundled.version) == 12
    copy = tmp_path / "text_recognizer.pt"
    copy.write_bytes((staged["registry"] / NAME / "v2" / "text_recognizer.pt").read_bytes())
    (tmp_path / "manifest.json").write_text(
        (bundled_model_path().parent / "manifest.json").read_text())  # the wrong manifest
    with pytest.raises(RegistryError, match="manifest beside it"):
        model_source.from_file(copy)
    monkeypatch.setenv(model_source.EXPECTED_ENV, staged["v2"]["sha256"][:12])
    with pytest.raises(RegistryError, match="EXPECTED_MODEL_VERSION says"):
        model_source.from_environment()  # the bundled model is not v2
    served = model_file()  # what a service serves by default: the ONNX export, with onnxruntime
    monkeypatch.setenv(model_source.EXPECTED_ENV, model_version(served))
    assert model_source.from_environment().version == model_version(served)


@pytest.mark.skipif(not onnx_available(), reason="onnxruntime is not installed")
def test_a_version_with_an_onnx_export_is_served_and_named_by_that_file(tmp_path):
    reg = tmp_path / "registry"
    v1 = stage_file(bundled_model_path(), NAME, PRODUCTION, reg, with_onnx=True)
    stage_file(bundled_model_path(), NAME, "latest", reg)  # v2: the TorchScript file only
    path, manifest = registry.resolve(NAME, alias=PRODUCTION, registry=reg)
    assert path.name == ONNX_FILE and sha256_file(path) == v1["onnx"]["sha256"]
    served = model_source.from_registry(NAME, alias=PRODUCTION, registry_dir=reg)
    # the version every answer reports is the served file's, as for the bundled model
    assert served.version == model_version(bundled_onnx_path()) == model_version(path)
    assert registry.resolve(NAME, version="v1", registry=reg, fmt="torchscript")[0].name == \
        MODEL_FILE
    assert registry.resolve(NAME, version="v2", registry=reg)[0].name == MODEL_FILE
    registry.resolve(NAME, version="v1", registry=reg, sha256=served.version)
    with pytest.raises(RegistryError, match="sha256 of the file it serves"):
        registry.resolve(NAME, version="v1", registry=reg, sha256=v1["sha256"][:12])
    out = tmp_path / "release-model" / ONNX_FILE  # what the Lambda image copies
    assert registry.main(["--alias", PRODUCTION, "--format", "onnx", "--out", str(out),
                          "--registry", str(reg), "--wandb", "off"]) == 0
    assert model_source.from_file(out).release == "v1"
    out.write_bytes(out.read_bytes() + b"\0")
    with pytest.raises(RegistryError, match="manifest beside it"):
        model_source.from_file(out)
    with pytest.raises(RegistryError, match="vouches for"):
        stage_file(reg / NAME / "v2" / MODEL_FILE, NAME, "latest", reg, with_onnx=True)


def test_a_rollout_reads_answers_with_and_without_line_scores():
    assert rollout._texts([("a", None), ("b", None)]) == (["a", "b"], None)
    assert rollout._texts([("a", 0.5), ("b", 0.75)]) == (["a", "b"], 0.625)


def test_fetch_writes_the_manifest_beside_a_model_named_like_the_staged_file(staged, tmp_path):
    out = tmp_path / "release-model" / "text_recognizer.pt"
    registry.fetch(NAME, version="v3", out=out, registry=staged["registry"], wandb="off")
    served = model_source.from_file(out)  # what the Lambda image checks at start
    assert served.release == "v3" and served.sha256 == staged["v3"]["sha256"]


# --- the rule -------------------------------------------------------------------------------------
BASE = Snapshot(calls=500, errors=0, p95_ms=10.0, confidence=0.97, compared=60, disagreed=1)
RULES = RolloutRules(min_samples=50, promote_after=300)


@pytest.mark.parametrize("candidate, reason", [
    (Snapshot(calls=100, errors=5, p95_ms=10.0, confidence=0.97), "error rate 5.0%"),
    (Snapshot(calls=100, p95_ms=30.0, confidence=0.97), "p95 30 ms = 3.0x"),
    (Snapshot(calls=100, p95_ms=10.0, confidence=0.90), "mean confidence 0.900"),
    (Snapshot(calls=100, p95_ms=10.0, confidence=0.97, compared=100, disagreed=30),
     "disagrees with production on 30.0%"),
])
def test_each_limit_alone_rolls_the_candidate_back(candidate, reason):
    verdict = judge(BASE, candidate, RULES)
    assert verdict.action == "rollback" and len(verdict.reasons) == 1
    assert verdict.reasons[0].startswith(reason), verdict.reasons


def test_disagreement_counts_against_the_candidate_only_where_it_is_the_less_sure():
    """A better model disagrees with production too: where the lines are scored, the candidate
    is rolled back for disagreeing only if it was less confident on those requests."""
    differs = dict(calls=100, p95_ms=10.0, confidence=0.97, compared=100, disagreed=30)
    surer = Snapshot(**differs, disagreement_gap=-0.04)
    assert judge(BASE, surer, RULES).action == "wait"
    unsure = Snapshot(**differs, disagreement_gap=0.06)
    verdict = judge(BASE, unsure, RULES)
    assert verdict.action == "rollback" and "less sure on those (by 0.060)" in verdict.reasons[0]


def test_the_rule_waits_for_evidence_and_promotes_only_a_clean_canary():
    few = Snapshot(calls=10, errors=10, p95_ms=99.0)
    assert judge(BASE, few, RULES).action == "wait"
    clean = Snapshot(calls=300, p95_ms=11.0, confidence=0.975, compared=300, disagreed=3)
    assert judge(BASE, clean, RULES, "canary").action == "promote"
    assert judge(BASE, clean, RULES, "shadow").action == "wait"  # a shadow never promotes
    assert judge(BASE, clean, RolloutRules(promote_after=0)).action == "wait"


# --- the router -----------------------------------------------------------------------------------
def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def answer(router: rollout.Rollout, batch) -> tuple[str, list]:
    job = router.submit(batch, time.monotonic() + 60)
    return job.model_version, job.result(timeout=60)


def test_canary_share_shadow_promotion_and_rollback_in_one_process(staged, reg, lines):
    router = rollout.Rollout(reg, load, seed=1, poll_s=0.05).start()
    try:
        v1, v3 = staged["v1"]["sha256"][:12], staged["v3"]["sha256"][:12]
        assert router.version == v1 and router.candidate is None
        manual = RolloutRules(promote_after=0)
        release.start("v3", "canary", 0.2, auto=False, rules=manual, registry_dir=reg)
        wait_for(lambda: router.candidate is not None)
        seen = [answer(router, [lines[i % len(lines)]])[0] for i in range(400)]
        share = seen.count(v3) / len(seen)
        assert set(seen) == {v1, v3} and abs(share - 0.2) <= 0.05, share
        status = router.status()
        assert status["candidate"]["compared"] >= 0.15 * 400  # production read those too
        assert status["verdict"]["action"] == "wait"

        release.rollback(registry_dir=reg)
        wait_for(lambda: router.candidate is None)
        assert {answer(router, [lines[0]])[0] for _ in range(30)} == {v1}

        release.start("v3", "shadow", auto=False, rules=manual, registry_dir=reg)
        wait_for(lambda: router.candidate is not None)
        assert {answer(router, [lines[i]])[0] for i in range(40)} == {v1}  # never returned
        wait_for(lambda: router.candidate.record.snapshot().compared >= 40)
        assert router.candidate.record.answered == 0

        release.promote(registry_dir=reg)
        wait_for(lambda: router.version == v3)
        assert read_aliases(reg, NAME) == {PRODUCTION: "v3", "latest": "v3"}
        assert {answer(router, [lines[0]])[0] for _ in range(20)} == {v3}
    finally:
        router.close()


def test_a_move_during_traffic_drops_no_request(staged, reg, lines):
    """Requests already queued on the model being retired are answered by it."""
    router = rollout.Rollout(reg, load, seed=2, poll_s=0.02).start()
    try:
        release.start("v3", "canary", 0.5, auto=False, registry_dir=reg)
        wait_for(lambda: router.candidate is not None)
        jobs = [router.submit(lines[:8], time.monotonic() + 60) for _ in range(40)]
        release.rollback(registry_dir=reg)
        jobs += [router.submit(lines[:8], time.monotonic() + 60) for _ in range(40)]
        results = [j.result(timeout=120) for j in jobs]
        assert all(len(r) == 8 for r in results)
        wait_for(lambda: router.candidate is None)
    finally:
        router.close()


def test_the_rule_rolls_a_worse_candidate_back_by_itself(staged, reg, lines):
    router = rollout.Rollout(reg, load, seed=3, poll_s=0.05).start()
    try:
        rules = RolloutRules(min_samples=30, promote_after=0)
        release.start("v2", "canary", 0.5, rules=rules, registry_dir=reg)
        wait_for(lambda: router.candidate is not None)
        for i in range(400):
            answer(router, [lines[i % len(lines)]])
            if CANDIDATE not in read_aliases(reg, NAME):
                break
        wait_for(lambda: CANDIDATE not in read_aliases(reg, NAME), 30)
        # the judge moves the alias first, then removes the plan and records why: wait for that
        wait_for(lambda: rollout.read_events(reg, NAME)[-1]["action"] != "start", 30)
        event = rollout.read_events(reg, NAME)[-1]
        assert event["action"] == "rollback" and event["by"] == "rule"
        assert event["release"] == "v2" and any("disagrees" in r for r in event["reasons"])
        assert read_aliases(reg, NAME)[PRODUCTION] == "v1"
        assert not rollout.plan_path(reg, NAME).exists()
    finally:
        router.close()


def test_the_rule_promotes_a_clean_canary_by_itself(staged, reg, lines):
    router = rollout.Rollout(reg, load, seed=4, poll_s=0.05).start()
    try:
        # the latency limit is tested on its own (above): here a p95 of some 25 calls on a shared
        # machine doubled production's once (CI, 2.2x) and rolled the clean canary back
        rules = RolloutRules(min_samples=20, promote_after=40, max_latency_ratio=10.0)
        release.start("v3", "canary", 0.5, rules=rules, registry_dir=reg)
        wait_for(lambda: router.candidate is not None)
        for i in range(400):
            answer(router, [lines[i % len(lines)]])
            if read_aliases(reg, NAME)[PRODUCTION] == "v3":
                break
        wait_for(lambda: router.version == staged["v3"]["sha256"][:12], 30)
        assert rollout.read_events(reg, NAME)[-1]["action"] == "promote"
    finally:
        router.close()


# --- the release command -----------------------------------------------------------------------
def test_release_command_moves_aliases_and_says_what_it_did(reg, capsys):
    base = ["--registry", str(reg)]
    assert release.main([*base, "start", "v3", "--mode", "shadow", "--manual"]) == 0
    assert read_aliases(reg, NAME)[CANDIDATE] == "v3"
    assert rollout.read_plan(reg, NAME) == Plan(mode="shadow", auto=False)
    assert release.main([*base, "promote"]) == 0
    assert release.main([*base, "rollback"]) == 1  # nothing to roll back any more
    assert release.main([*base, "start", "v3"]) == 1  # v3 is production already
    assert release.main([*base, "promote", "--version", "v1"]) == 0  # back to v1 by hand
    out, err = capsys.readouterr()
    assert "text-recognizer:candidate -> v3 (shadow, by hand)" in out
    assert "text-recognizer:production -> v3" in out and "production -> v1" in out
    errors = err.strip().splitlines()
    assert len(errors) == 2 and all(e.startswith("error: ") for e in errors)
    assert "No text-recognizer:candidate to roll back" in errors[0]
    assert "v3 is text-recognizer:production already" in errors[1]
    assert release.main([*base, "status"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["aliases"][PRODUCTION] == "v1"
    assert [e["action"] for e in status["events"]][-3:] == ["start", "promote", "promote"]


# --- under load, over HTTP ---------------------------------------------------------------------
@pytest.mark.slow
def test_canary_promotion_and_rollback_under_load_drop_nothing(staged, reg, tmp_path):
    """32 clients for about 30 s against two worker processes serving `production`: a 10%
    canary of v3, its promotion, then a 10% canary of v2 and its rollback. No request fails,
    each canary answers its share within 5 points, and every answer names its model."""
    from lab_code.measuring.loadgen import realworld_bodies
    from lab_code.measuring.rehearsal import candidate_records, rehearse
    from lab_code.serving.ports import free_port
    from lab_code.serving.processes import start_background, stop_background
    from lab_code.serving.runner import wait_for_workers

    v1, v2, v3 = (staged[v]["sha256"][:12] for v in ("v1", "v2", "v3"))
    manual = RolloutRules(promote_after=0, min_samples=10**9)  # the moves here are by hand
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log = tmp_path / "service.log"
    proc = start_background(["lab_code.serving", "serverless", "--port", str(port), "--workers",
                             "2", "--model-alias", PRODUCTION, "--registry", str(reg)],
                            url + "health", log)
    try:
        assert wait_for_workers(log, 2)
        moves = [
            (3, "canary v3", lambda: release.start("v3", "canary", 0.1, False, manual,
                                                   registry_dir=reg)),
            (13, "promote", lambda: release.promote(registry_dir=reg)),
            (16, "canary v2", lambda: release.start("v2", "canary", 0.1, False, manual,
                                                    registry_dir=reg)),
            (26, "rollback", lambda: release.rollback(registry_dir=reg)),
        ]
        timeline = rehearse(url, realworld_bodies(family="screenshot"), clients=32,
                            duration_s=30, moves=moves, health_every_s=1.0)
    finally:
        stop_background(proc)
    at = {what: t for t, what in timeline.moves}
    assert set(at) == {"canary v3", "promote", "canary v2", "rollback"}, timeline.moves
    assert len(timeline.answers) > 300 and not timeline.failed(), timeline.to_dict()
    assert {a.version for a in timeline.answers} <= {v1, v2, v3}
    settle = 1.0  # the workers follow the registry within a poll (0.25 s) and a model load
    first = timeline.shares(at["canary v3"] + settle, at["promote"])
    second = timeline.shares(at["canary v2"] + settle, at["rollback"])
    assert abs(first.get(v3, 0) - 0.1) <= 0.05 and set(first) == {v1, v3}, first
    assert abs(second.get(v2, 0) - 0.1) <= 0.05 and set(second) == {v2, v3}, second
    assert timeline.shares(0, at["canary v3"]) == {v1: 1.0}
    assert timeline.shares(at["promote"] + settle, at["canary v2"]) == {v3: 1.0}
    assert timeline.shares(at["rollback"] + settle) == {v3: 1.0}
    # /health, read each second meanwhile, showed each candidate's record while it ran
    seen = {release_name for _, release_name, _ in candidate_records(timeline)}
    assert seen == {"v3", "v2"}, [t for t, _ in timeline.health]
