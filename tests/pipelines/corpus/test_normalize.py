"""docs/reliability.md row 12: a normalisation that removes characters says what it removed."""

import unicodedata

import pytest

from pipelines.corpus.normalize import CHANGE_KINDS, normalize_text, normalize_with_changes


def test_counts_of_removed_characters():
    nfd = unicodedata.normalize("NFD", "Café")  # 5 code points -> 4 in NFC
    text = f"\ufeff{nfd}\x00 au\x00lait\r\nline\x07two\x1b\x85\r\nend\ufeff\r\n\r\n\r\n\r\nlast  one  "
    got, changes = normalize_with_changes(text)
    assert got == "Café aulait\nlinetwo\nend\n\nlast one"
    assert changes == {"crlf": 6, "nul": 2, "bom": 2, "control": 3, "unicode_form": 1, "whitespace": 5}
    assert set(changes) <= set(CHANGE_KINDS)
    # the reference: every removed character accounted for (6 CR, 2 NUL, 2 BOM, BEL ESC NEL, 1 merged mark,
    # 5 whitespace: two blank lines beyond one, one space of the double space, two trailing spaces)
    assert len(text) - len(got) == sum(changes.values())
    assert normalize_text(text) == got


@pytest.mark.parametrize("text,changes", [
    ("clean text\nsecond line", {}),
    ("lone\rcarriage return", {}),  # CR -> LF replaces, removes nothing
    ("tab\tand\u00a0nbsp", {}),  # one whitespace character each -> one space
    ("x\u2028y", {}),
])
def test_nothing_removed_nothing_recorded(text, changes):
    assert normalize_with_changes(text)[1] == changes


def test_nfkc_expansion_is_not_a_removal():
    got, changes = normalize_with_changes("\ufb01ne", "NFKC")  # the fi ligature -> "fi"
    assert got == "fine" and changes == {}


def test_the_corpus_stage_records_what_normalisation_removed(tmp_path):
    from pipelines.corpus.steps import process_document

    from .conftest import corpus_config

    cfg = corpus_config(tmp_path / "out")
    english = ("All human beings are born free and equal in dignity and rights. They are endowed with reason "
               "and conscience and should act towards one another in a spirit of brotherhood.")
    text, _reason, facts = process_document(f"\ufeff{english}\x00\r\n", cfg)
    assert text == english and facts["lang"] == "en"
    assert facts["normalized"] == {"bom": 1, "nul": 1, "crlf": 1, "whitespace": 1}  # the trailing newline
    assert "normalized" not in process_document(english, cfg)[2]
    assert process_document("\x00\x01", cfg) == ("", "empty_text", {"normalized": {"nul": 1, "control": 1}})
