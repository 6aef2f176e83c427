"""The document set and its script (tools/docset.py): the committed set is whole and honest, and
the script's parts do what its docstring says (the model's figures are in test_model_quality.py
and in the committed side-by-side run)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lab_code.training import data, evaluate, fonts

ROOT = Path(__file__).resolve().parents[1]
SET = ROOT / "tests" / "data" / "documents"
spec = importlib.util.spec_from_file_location("docset", ROOT / "tools" / "docset.py")
docset = importlib.util.module_from_spec(spec)
sys.modules["docset"] = docset  # its dataclasses look their module up there
spec.loader.exec_module(docset)


@pytest.fixture(scope="module")
def labels() -> list[dict]:
    return json.loads((SET / "labels.json").read_text(encoding="utf-8"))


def test_set_is_small_every_image_labelled_and_every_label_in_the_charset(labels):
    files = {p.relative_to(SET).as_posix() for p in SET.rglob("*.png")}
    assert 300 <= len(labels) <= 400 and files == {r["file"] for r in labels}
    assert sum(p.stat().st_size for p in SET.rglob("*") if p.is_file()) < 5e6
    for r in labels:
        assert r["text"] and set(r["text"]) <= set(data.CHARSET + "\n"), r
        assert r["text"] == r["text"].strip() and "  " not in r["text"]
    assert len({r["text"] for r in labels}) == len(labels), "no text is used twice"


def test_families_resolutions_and_blocks(labels):
    families = {r["family"] for r in labels}
    assert families == {f"{k}_{d}dpi" for k in ("line", "code", "block") for d in docset.DPIS}
    for r in labels:
        assert r["family"].endswith(f"_{r['dpi']}dpi")
        lines = r["text"].count("\n") + 1
        assert (2 <= lines <= 6) if r["family"].startswith("block") else lines == 1
        assert r["monospace"] == bool(docset.MONOSPACE.search(r["font"])) or \
            r["family"].startswith(("line", "block"))
    assert all(r["monospace"] for r in labels if r["family"].startswith("code"))
    assert sum(r["family"].startswith("code") for r in labels) >= 80


def test_every_document_and_no_font_training_draws_with(labels):
    assert {r["document"] for r in labels} == {d.name for d in docset.DOCUMENTS}
    assert not [r for r in labels if docset.TRAINING_FONTS.search(r["font"])]


def test_the_scripts_list_knows_the_training_fonts_a_manual_could_embed():
    """PDFs name fonts by their PostScript names: each of these training families is caught."""
    every, _, _ = data.document_fonts()
    families = {fonts.family(p) for p in every}
    embedded = {"NimbusRoman-Regular": "Nimbus Roman", "NimbusMonoPS-Regular": "Nimbus Mono PS",
                "C059-Roman": "C059", "FreeMono": "FreeMono", "Cousine": "Cousine",
                "TeXGyreCursor-Regular": "TeX Gyre Cursor", "LMRoman10-Regular":
                "Latin Modern Roman", "LMMono10-Regular": "Latin Modern Mono"}
    for name, family in embedded.items():
        assert family in families and docset.TRAINING_FONTS.search(name), name
    assert not docset.TRAINING_FONTS.search("NimbusMonL-Regu")  # URW's 1999 Courier: not ours


def test_set_text_is_not_training_text(labels):
    mine = set(data.english_lines())
    assert not [r for r in labels if r["text"] in mine]


def test_evaluate_reads_the_set_and_gathers_its_rows(tmp_path, labels):
    samples = evaluate.documents_set()
    assert len(samples) == len(labels) and all(s.path.is_file() for s in samples[:20])
    assert sum(s.paragraph for s in samples) == sum(r["family"].startswith("block")
                                                    for r in labels)
    readings = [evaluate.Reading(s.text, 1.0) for s in samples]
    table = evaluate.by_family(samples, readings, evaluate.DOCUMENT_GROUPS)
    assert table["lines_100dpi"]["images"] == sum(r["family"] in ("line_100dpi", "code_100dpi")
                                                  for r in labels)
    assert table["code"]["images"] == sum(r["monospace"] and "\n" not in r["text"]
                                          for r in labels)
    assert table["overall"]["cer"] == 0.0
    with pytest.raises(FileNotFoundError, match="tools/docset.py"):
        evaluate.documents_set(tmp_path)


# --- the script's parts --------------------------------------------------------------------------

def test_clean_text_spells_typography_in_ascii_and_refuses_other_characters():
    assert docset.clean_text(["\u201cfile\u201d", "\ufb01les", "1\u20137"]) == '"file" files 1-7'
    assert docset.clean_text(["a_b", "cd"]) is None
    assert docset.clean_text(["12", "34"]) is None  # no word in it
    assert docset.clean_text(["foo();"]) == "foo();"


def test_crop_box_stays_half_way_to_the_neighbouring_lines():
    lines = [docset.Line((10, 10, 100, 20), "one", 0), docset.Line((10, 24, 100, 34), "two", 0),
             docset.Line((10, 50, 100, 60), "three", 0)]
    x0, y0, x1, y1 = docset.crop_box(lines, [1], 1.0, (200, 100))
    assert y0 == 22 and y1 >= 34 and y1 <= 42 and x0 == 5 and x1 == 105
    overlapping = lines + [docset.Line((50, 25, 150, 33), "other", 1)]
    assert docset.crop_box(overlapping, [1], 1.0, (200, 100)) == (0, 0, 0, 0)


def test_ink_between_words_finds_an_underscore_drawn_as_a_rule():
    page = Image.new("RGB", (100, 20), "white")
    line = docset.Line((0, 0, 100, 20), "a b", 0, gaps=((40.0, 60.0),))
    assert not docset.ink_between_words(page, line, 1.0)
    page.paste((0, 0, 0), (38, 16, 62, 18))
    assert docset.ink_between_words(page, line, 1.0)


def test_script_help_and_a_clear_error_without_poppler(tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit) as done:
        docset.main(["--help"])
    assert done.value.code == 0
    monkeypatch.setattr(docset.shutil, "which", lambda tool: None)
    assert docset.main(["--out", str(tmp_path / "set")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: pdftoppm is not installed: apt-get install -y poppler-utils")
    assert err.count("\n") == 1


@pytest.mark.skipif(shutil.which("pdftoppm") is None or
                    not Path(docset.DOCUMENTS[1].path).is_file(),
                    reason="needs poppler-utils and libtasn1-doc")
def test_a_page_gives_lines_with_their_face_and_the_render_is_seeded(tmp_path):
    doc = docset.DOCUMENTS[1]
    lines = docset.page_lines(Path(doc.path), 6)
    assert any(ln.text for ln in lines) and all(ln.font for ln in lines if ln.text)
    assert any(ln.mono for ln in lines) and any(not ln.mono for ln in lines if ln.font)
    page = docset.render(Path(doc.path), 6, 100, tmp_path)
    assert page.size == (850, 1100)
    assert np.asarray(page).min() < 100
