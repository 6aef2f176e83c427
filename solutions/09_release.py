# %% [context]
import json
import shutil
import tempfile
from pathlib import Path

import requests

from lab_code.artifacts import bundled_model_path
from lab_code.measuring import rehearsal
from lab_code.measuring.loadgen import realworld_bodies
from lab_code.serving import release, rollout
from lab_code.serving.ports import free_port
from lab_code.serving.processes import start_background, stop_background
from lab_code.training.degrade import degrade
from lab_code.training.stage_model import stage_file

WORK = Path(tempfile.mkdtemp(prefix="lesson09-solutions-"))
REG = WORK / "registry"
NAME = "text-recognizer"
v1 = stage_file(bundled_model_path(), NAME, "production", REG)
v2 = stage_file(degrade(None, WORK / "worse.pt", noise=0.4), NAME, "latest", REG)
v3 = stage_file(degrade(None, WORK / "close.pt", noise=0.01, seed=3), NAME, "latest", REG)
rules = rollout.RolloutRules(min_samples=30, promote_after=80)


def serve(registry, *flags):
    """A one-worker service on a free port reading `registry`; returns (process, url, log)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log = Path(tempfile.mkdtemp(prefix="lesson09-", dir=WORK)) / "service.log"
    process = start_background(["lab_code.serving", "serverless", "--port", str(port),
                                "--workers", "1", "--registry", str(registry), *flags],
                               url + "health", log)
    return process, url, log


def fresh_registry():
    """A copy of REG with production back on v1 and no release running."""
    copy = Path(tempfile.mkdtemp(prefix="registry-", dir=WORK))
    shutil.rmtree(copy)
    shutil.copytree(REG, copy)
    release.promote(registry_dir=copy, version="v1")
    return copy


# %% [exercise 1]
def rollback_reasons(noise=0.15, seconds=20):
    """Stage a model degraded by `noise`, canary it at 20% by rule under load, and return the
    last rollout event (a rollback, with the limit it breached), or None if nothing moved."""
    registry = fresh_registry()
    worse = degrade(None, WORK / f"noise-{noise}.pt", noise=noise, seed=1)
    manifest = stage_file(worse, NAME, "latest", registry)
    service, url, _ = serve(registry, "--model-alias", "production")
    try:
        moves = [(1, "canary", lambda: release.start(manifest["version"], "canary", 0.2,
                                                     rules=rules, registry_dir=registry))]
        timeline = rehearsal.rehearse(url, realworld_bodies(family="screenshot"), clients=16,
                                      duration_s=seconds, moves=moves)
    finally:
        stop_background(service)
    assert not timeline.failed(), timeline.to_dict()
    events = [e for e in rollout.read_events(registry, NAME) if e["by"] == "rule"]
    return events[-1] if events else None


for noise in (0.1, 0.3):
    event = rollback_reasons(noise)
    print(noise, event and (event["action"], event.get("reasons")))
# The weakest noise may pass the rule (then it is promoted after 80 clean answers, or nothing
# happens in time); stronger noise breaks the disagreement limit first, and more noise breaks it
# after fewer calls. Confidence drops too; the first limit past its line is the one named.

# %% [exercise 2]
def shadow_rehearsal(seconds=15):
    """v2 as a shadow under load: every answer from v1, and v2 still rolled back by rule."""
    registry = fresh_registry()
    service, url, _ = serve(registry, "--model-alias", "production")
    try:
        moves = [(1, "shadow v2", lambda: release.start("v2", "shadow", rules=rules,
                                                        registry_dir=registry))]
        timeline = rehearsal.rehearse(url, realworld_bodies(family="screenshot"), clients=16,
                                      duration_s=seconds, moves=moves)
    finally:
        stop_background(service)
    return timeline.shares(), rollout.read_events(registry, NAME)[-1]


shares, event = shadow_rehearsal()
print(shares)
print(event["action"], event["by"], event.get("reasons"))
assert list(shares) == [v1["sha256"][:12]]  # nobody was answered by the shadow
# A shadow reads every request a second time (100% extra model work), a 20% canary reads 20%
# (plus production's copy of those to compare): the shadow is the safest and the dearest mode.

# %% [exercise 3]
def pinned_service(version="v3", sha256=None):
    """Serve `version` pinned by sha256: what /health and an answer say; then a wrong sha256
    and the service's one-sentence refusal."""
    manifest = json.loads((REG / NAME / version / "manifest.json").read_text())
    sha256 = sha256 or manifest["sha256"][:12]
    service, url, _ = serve(REG, "--model-version", version, "--model-sha256", sha256)
    try:
        health = requests.get(url + "health", timeout=10).json()
        body = realworld_bodies(family="screenshot", limit=1)[0]
        answer = requests.post(url, data=body, headers={"content-type": "application/json"},
                               timeout=30)
    finally:
        stop_background(service)
    wrong = None
    try:
        serve(REG, "--model-version", version, "--model-sha256", "0" * 12)
    except RuntimeError as err:  # the service stops at once: it never answers /health
        wrong = str(err)
    return health["model"], answer.headers["x-model-version"], wrong


model, header, wrong = pinned_service()
print(model, header)
print(wrong)
# The log says the file's sha256 is not the one asked for. Refusing to start is the point of
# pinning: a file that changed is not the model you tested, and serving it would answer every
# request with a model nobody released.
