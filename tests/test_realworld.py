"""The real-world set and its script (tools/realworld.py), the evaluate side-by-side helpers and
the Tesseract binding: small, fast checks (the model's bars are in test_model_quality.py)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lab_code.training import data, evaluate, fonts, tesseract

ROOT = Path(__file__).resolve().parents[1]
SET = ROOT / "tests" / "data" / "realworld"
spec = importlib.util.spec_from_file_location("realworld", ROOT / "tools" / "realworld.py")
realworld = importlib.util.module_from_spec(spec)
spec.loader.exec_module(realworld)


@pytest.fixture(scope="module")
def labels() -> list[dict]:
    return json.loads((SET / "labels.json").read_text(encoding="utf-8"))


# --- the committed set ---------------------------------------------------------------------------

def test_set_is_300_to_500_images_under_10_mb_each_labelled(labels):
    files = {p.relative_to(SET).as_posix() for p in SET.rglob("*") if p.suffix in (".png", ".jpg")}
    assert 300 <= len(labels) <= 500
    assert files == {r["file"] for r in labels}, "every image has one label and vice versa"
    assert sum(p.stat().st_size for p in SET.rglob("*") if p.is_file()) < 10e6


def test_every_label_is_in_the_charset_and_paragraphs_have_lines(labels):
    for r in labels:
        assert r["text"] and set(r["text"]) <= set(data.CHARSET + "\n"), r
        assert r["text"] == r["text"].strip() and "  " not in r["text"]
    paragraphs = [r for r in labels if r["family"] == "paragraph"]
    assert paragraphs and all(2 <= r["text"].count("\n") + 1 <= 6 for r in paragraphs)
    assert {r["family"] for r in labels} == set(realworld.FAMILIES)


def test_set_is_drawn_only_in_held_out_families_that_training_never_uses(labels):
    assert {r["font"] for r in labels} == set(fonts.HELD_OUT_FAMILIES)
    assert not [f for f in data.fonts() if fonts.is_held_out(fonts.family(f))]


def test_script_uses_the_fonts_modules_held_out_list():
    assert set(realworld.held_out_families()) == set(fonts.HELD_OUT_FAMILIES)


def test_set_text_is_not_the_courses_own_english_lines(labels):
    mine = set(data.english_lines())
    assert not [r for r in labels if r["text"] in mine]
    assert len({r["text"] for r in labels}) == len(labels), "no text is used twice"


def test_phone_copies_are_jpeg_at_quality_30_to_70(labels):
    phone = [r for r in labels if r["family"] == "phone"]
    assert phone and all(r["file"].endswith(".jpg") for r in phone)
    assert all(30 <= int(r["degradations"][-1].removeprefix("jpeg")) <= 70 for r in phone)


# --- the script's parts --------------------------------------------------------------------------

def test_sentences_keep_charset_text_and_map_typographic_quotes():
    text = ("1. Definitions. \u201cYou\u201d means the person who receives   this License. "
            "Section 2 \u2014 see <https://x.example> for terms. Short one. "
            "Miscellaneous ---------- This License covers all of it.")
    got = realworld.sentences(text)
    assert got == ['"You" means the person who receives this License.']


def test_wrap_keeps_every_word_within_the_width():
    lines = realworld.wrap("the quick brown fox jumps over the lazy dog", 12)
    assert " ".join(lines) == "the quick brown fox jumps over the lazy dog"
    assert all(len(line) <= 12 for line in lines) and len(lines) > 2


def test_plan_is_deterministic_and_never_repeats_a_text():
    texts = [f"Sentence number {i} of the test corpus." for i in range(400)]
    counts = {"unseen_font": 6, "screenshot": 6, "paragraph": 4, "phone": 6}
    a = realworld.plan(texts, ("A", "B"), counts, seed=1)
    assert a == realworld.plan(texts, ("A", "B"), counts, seed=1)
    assert a != realworld.plan(texts, ("A", "B"), counts, seed=2)
    assert [sum(it.family == f for it in a) for f in counts] == list(counts.values())
    assert all(12 <= it.size <= 40 for it in a)
    assert all(it.degradations[-1] == "jpeg" for it in a if it.family == "phone")
    assert all(not it.degradations for it in a if it.family != "phone")


def test_degrade_is_seeded_changes_the_image_and_refuses_unknown_steps():
    img = Image.new("RGB", (120, 30), "white")
    img.paste((0, 0, 0), (10, 10, 100, 20))
    steps = ["blur", "contrast", "rotate", "perspective", "light", "rescale", "noise", "jpeg"]
    a = realworld.degrade(img, steps, np.random.default_rng(0))
    b = realworld.degrade(img, steps, np.random.default_rng(0))
    assert a.tobytes() == b.tobytes()
    assert a.size[0] > img.size[0] and np.asarray(a).std() < np.asarray(img).std()
    with pytest.raises(ValueError, match="unknown degradation"):
        realworld.degrade(img, ["smudge"], np.random.default_rng(0))


def test_page_html_escapes_text_and_breaks_paragraph_lines():
    it = realworld.Item("x/0", "paragraph", ['a "b" <c>', "d & e"], "Lato", 20, 400, False,
                        "#000", "#fff")
    page = realworld.page_html([it])
    assert "a &quot;b&quot; &lt;c&gt;<br>d &amp; e" in page and "font-family:'Lato'" in page


def test_script_help_and_a_clear_error_without_chromium(tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit) as done:
        realworld.main(["--help"])
    assert done.value.code == 0
    monkeypatch.setattr(realworld, "check_fonts", lambda families: None)  # fonts or not
    monkeypatch.setattr(realworld, "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.setattr(realworld.screenshots, "__defaults__", (tmp_path / "no-chromium",))
    assert realworld.main(["--out", str(tmp_path / "set"), "--scale", "0.01"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: No Chromium at") and err.count("\n") == 1


# --- evaluate's helpers --------------------------------------------------------------------------

def _samples(tmp_path: Path) -> list[evaluate.Sample]:
    path = tmp_path / "x.png"
    Image.new("RGB", (40, 20), "white").save(path)
    return [evaluate.Sample(path, "screenshot", "abcd"), evaluate.Sample(path, "phone", "ab\ncd")]


def test_by_family_counts_cer_lines_and_errors(tmp_path):
    samples = _samples(tmp_path)

    def reader(img, sample):
        if sample.family == "phone":
            raise RuntimeError("boom")
        return "abXd"

    readings = evaluate.read_all(reader, samples, warmup=0)
    table = evaluate.by_family(samples, readings)
    assert table["screenshot"]["cer"] == 0.25 and table["screenshot"]["errors"] == 0
    assert table["phone"] == {**table["phone"], "cer": 1.0, "lines": 2, "errors": 1}
    assert table["overall"]["cer"] == round(6 / 9, 4) and table["overall"]["images"] == 2
    assert readings[1].error == "RuntimeError: boom"


def test_realworld_set_reads_the_labels_and_explains_a_missing_set(tmp_path):
    samples = evaluate.realworld_set()
    assert len(samples) >= 300 and all(s.path.is_file() for s in samples[:20])
    assert sum(s.paragraph for s in samples) >= 60
    with pytest.raises(FileNotFoundError, match="tools/realworld.py"):
        evaluate.realworld_set(tmp_path)


def test_one_thread_restores_the_thread_count():
    import torch

    before = torch.get_num_threads()
    with evaluate.one_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_evaluate_tesseract_flag_says_how_to_install_when_absent(monkeypatch, capsys):
    def missing(jobs):
        raise tesseract.TesseractError(f"libtesseract is not installed: {tesseract.INSTALL}.")

    monkeypatch.setattr(tesseract, "read_apart", missing)
    monkeypatch.setattr(evaluate, "REALWORLD_DIR", evaluate.REALWORLD_DIR)
    samples = evaluate.realworld_set()[:2]
    monkeypatch.setattr(evaluate, "realworld_set", lambda root: samples)
    assert evaluate.main(["--realworld-only", "--tesseract"]) == 1
    err = capsys.readouterr().err
    assert err == f"error: libtesseract is not installed: {tesseract.INSTALL}.\n"


# --- the Tesseract binding (skipped where libtesseract is not installed) -------------------------

@pytest.fixture(scope="module")
def engine():
    try:
        with tesseract.Tesseract() as e:
            yield e
    except tesseract.TesseractError as err:
        pytest.skip(str(err))


def test_tesseract_reads_a_clean_line_and_a_paragraph(engine, labels):
    line = next(r for r in labels if r["family"] == "unseen_font" and r["size"] >= 24)
    card = next(r for r in labels if r["family"] == "paragraph" and r["scheme"] == "light")
    assert engine.read(Image.open(SET / line["file"]), tesseract.PSM_LINE) == line["text"]
    got = engine.read(Image.open(SET / card["file"]), tesseract.PSM_BLOCK)
    assert got.count("\n") == card["text"].count("\n")


def test_tesseract_is_timed_apart_from_torch_on_one_thread(engine, labels):
    # torch's OpenMP runtime, once loaded, would run libtesseract on its settings (13x slower
    # here): the benchmark's readings come from a process that never loads torch.
    line = next(r for r in labels if r["family"] == "unseen_font" and r["size"] >= 24)
    answer = tesseract.read_apart([(SET / line["file"], tesseract.PSM_LINE)] * 2, warmup=1)
    assert answer["torch_loaded"] is False
    assert [r["text"] for r in answer["readings"]] == [line["text"]] * 2
    assert all(r["ms"] > 0 and not r["error"] for r in answer["readings"])
    assert answer["version"] == engine.version


def test_tesseract_apart_says_what_is_missing(engine, labels):
    with pytest.raises(tesseract.TesseractError, match="Tesseract has no 'xx' model: apt-get"):
        tesseract.read_apart([(SET / labels[0]["file"], tesseract.PSM_LINE)], language="xx")


def test_a_tesseract_child_that_runs_too_long_is_stopped_with_a_sentence(monkeypatch, labels):
    monkeypatch.setattr(tesseract, "START_S", 0.05)  # Python alone takes longer to start
    monkeypatch.setattr(tesseract, "PER_IMAGE_S", 0.0)
    with pytest.raises(tesseract.TesseractError, match=r"took more than 0 s on 1 images and "
                                                       r"was stopped; check the machine's load"):
        tesseract.read_apart([(SET / labels[0]["file"], tesseract.PSM_LINE)], warmup=0)


def test_tesseract_output_is_mapped_to_ascii():
    assert "\u201cdon\u2019t\u201d \u2014 \ufb01le".translate(tesseract.ASCII) == '"don\'t" - file'


# --- what the README and lesson 01 say of the committed side-by-side run -----------------------

SIDE_BY_SIDE = ROOT / "profiling" / "results" / "ocr_side_by_side.json"
README_ROWS = {"lines in unseen fonts": "unseen_font", "browser screenshots": "screenshot",
               "paragraph cards": "paragraph", "phone-like copies": "phone", "overall": "overall"}


DOCUMENT_ROWS = {"lines at 100 dpi": "lines_100dpi", "code lines, 100 and 150 dpi": "code",
                 "all document lines": "overall"}


def test_readme_side_by_side_table_is_the_committed_run():
    import re

    everything = json.loads(SIDE_BY_SIDE.read_text())
    run = everything["realworld"]
    readme = (ROOT / "README.md").read_text()
    assert f"Tesseract {run['tesseract_version']}" in readme
    rows = {**{k: ("realworld", v) for k, v in README_ROWS.items()},
            **{k: ("documents", v) for k, v in DOCUMENT_ROWS.items()}}
    seen = set()
    for line in readme.splitlines():
        cells = [c.strip().strip("*") for c in line.strip("|").split("|")]
        name = re.sub(r" \(.*\)$", "", cells[0])
        if len(cells) != 5 or name not in rows:
            continue
        part, key = rows[name]
        mine, peer = everything[part]["recognizer"][key], everything[part]["tesseract"][key]
        assert cells[1:] == [f"{mine['cer']:.2%}", f"{mine['ms_per_line']:.1f}",
                             f"{peer['cer']:.2%}", f"{peer['ms_per_line']:.1f}"], line
        seen.add(name)
    assert seen == set(rows)


def test_what_the_lessons_say_of_the_two_readers_holds_in_the_committed_run():
    # README and lesson 01: faster per line, fewer errors on phone-like copies, on screenshots and
    # on the document set overall, more on paragraphs, on document lines at 100 dpi and on code
    # (about twice Tesseract's there); the README gives the ratio.
    everything = json.loads(SIDE_BY_SIDE.read_text())
    run, docs = everything["realworld"], everything["documents"]
    mine, peer = run["recognizer"], run["tesseract"]
    ratio = peer["overall"]["ms_per_line"] / mine["overall"]["ms_per_line"]
    assert ratio > 1.5
    assert f"about {ratio:.1f} times" in (ROOT / "README.md").read_text()
    assert mine["phone"]["cer"] < peer["phone"]["cer"]
    assert mine["screenshot"]["cer"] < peer["screenshot"]["cer"]
    assert mine["paragraph"]["cer"] > 2 * peer["paragraph"]["cer"]
    assert docs["recognizer"]["overall"]["cer"] < docs["tesseract"]["overall"]["cer"]
    assert docs["recognizer"]["lines_100dpi"]["cer"] > docs["tesseract"]["lines_100dpi"]["cer"]
    assert 1.5 < docs["recognizer"]["code"]["cer"] / docs["tesseract"]["code"]["cer"] < 3
