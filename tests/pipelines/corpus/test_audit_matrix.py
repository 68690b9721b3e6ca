"""The corpus audit's language x reason matrix, flags, examples and token counts, on a corpus with
planted drops (tests/pipelines/corpus/planted.py): the numbers on the page equal the planted truth
and a recount from the output's own tables; token counts equal tokenizing the kept texts again."""

import re
from collections import Counter
from html.parser import HTMLParser

import pyarrow.parquet as pq
import pytest

from dags.cli import main
from pipelines.audit import write_audit
from pipelines.audit.corpus_langs import count_matrix
from pipelines.audit.screens import static_problems
from tests.pipelines.corpus.conftest import rows
from tests.pipelines.corpus.planted import build


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("planted")
    out, manifest, kept, dropped = build(tmp)
    page = write_audit(out, tmp / "audit")
    return out, manifest, kept, dropped, page


class _Tables(HTMLParser):
    """Every table of a page as rows of cell texts, keyed by the heading before it."""

    def __init__(self):
        super().__init__()
        self.tables, self.heading, self._text, self._row, self._in = [], "", [], None, None

    def handle_starttag(self, tag, attrs):
        if tag in ("h2", "h3", "summary", "td", "th"):
            self._in, self._text = tag, []
        if tag == "table":
            self.tables.append((self.heading, []))
        if tag == "tr":
            self._row = []

    def handle_endtag(self, tag):
        text = " ".join("".join(self._text).split())
        if tag in ("h2", "h3", "summary") and self._in == tag:
            self.heading, self._in = text, None
        if tag in ("td", "th") and self._row is not None:
            self._row.append(text)
            self._in = None
        if tag == "tr" and self._row is not None:
            self.tables[-1][1].append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._in:
            self._text.append(data)


def tables(page) -> list[tuple[str, list[list[str]]]]:
    parser = _Tables()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser.tables


def table_after(page, heading: str) -> list[list[str]]:
    return next(t for h, t in tables(page) if h.startswith(heading))


def recount(out) -> tuple[Counter, Counter]:
    """kept per language and dropped per (language, reason), straight from data/, dropped/, quarantine/."""
    kept = Counter(r["lang"] for r in rows(out / "data", ["lang"]))
    dropped = Counter((r["lang"] or "und", r["reason"]) for r in rows(out / "dropped", ["lang", "reason"]))
    n_quarantined = len(rows(out / "quarantine", ["error"]))
    if n_quarantined:
        dropped[("und", "quarantined")] = n_quarantined
    return kept, dropped


def text_of(page) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page.read_text(encoding="utf-8")))


def test_matrix_equals_the_planted_drops_and_a_recount_of_the_tables(planted):
    out, manifest, kept, dropped, page = planted
    assert recount(out) == (kept, dropped)  # the corpus did what was planted
    m = count_matrix(out, manifest["outputs"])
    assert (Counter(m.kept), +Counter(m.dropped)) == (kept, dropped)
    inputs = Counter(kept)
    for (lang, _), n in dropped.items():
        inputs[lang] += n
    assert sum(inputs.values()) == manifest["counts"]["input"]

    shown = table_after(page, "Matrix")
    header, body = shown[0], shown[1:]
    assert header[:3] == ["lang", "input", "kept"] and sorted(header[3:]) == sorted({r for _, r in dropped})
    assert [r[0] for r in body] == sorted(inputs, key=lambda lang: (-inputs[lang], lang))
    for row in body:
        lang = row[0]
        assert (int(row[1]), int(row[2])) == (inputs[lang], kept[lang]), row
        for reason, cell in zip(header[3:], row[3:]):
            n = dropped[(lang, reason)]
            assert cell == (f"{n} ({100 * n / inputs[lang]:.1f}%)" if n else ""), (lang, reason, cell)
    text = text_of(page)
    n = manifest["counts"]["input"]
    assert f"records in the matrix: {n}; manifest input: {n}: holds" in text
    assert (page.parent / "lang_reason_heatmap.png").stat().st_size > 5000

    cells = sorted(((lang, reason, n / inputs[lang], n) for (lang, reason), n in dropped.items()
                    if reason not in ("lang_not_in_set", "quarantined")), key=lambda c: (-c[2], -c[3], c[0], c[1]))
    worst = "; ".join(f"{lang} {reason} {100 * s:.1f}% ({n} of {inputs[lang]})" for lang, reason, s, n in cells[:5])
    assert f"worst cells: {worst} " in text


def _flagged(page) -> set[tuple[str, str]]:
    return {(r[0], r[2]) for r in table_after(page, "Flagged languages")[1:]}


@pytest.mark.parametrize("share", [0.2, 0.3, 0.6])
def test_flagged_languages_at_the_top(planted, tmp_path, capsys, share):
    out, _, kept, dropped, page = planted  # the fixture's page: the default share, 0.3
    if share != 0.3:
        assert main(["audit", str(out), "--output", str(tmp_path), "--flag-share", str(share)]) == 0
        page = tmp_path / "index.html"
    inputs = Counter(kept)
    for (lang, _), n in dropped.items():
        inputs[lang] += n
    expected = {(lang, reason) for (lang, reason), n in dropped.items()
                if n / inputs[lang] > share and reason not in ("lang_not_in_set", "quarantined")}
    assert expected and _flagged(page) == expected
    html = page.read_text(encoding="utf-8")
    assert html.index("Flagged languages") < html.index("<h2>Accounting</h2>")


def test_a_bad_flag_share_is_a_usage_error(planted, capsys):
    with pytest.raises(SystemExit) as exc:  # argparse: usage line + one error line, exit 2
        main(["audit", str(planted[0]), "--flag-share", "1.5"])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert err.splitlines()[-1] == "mgte audit: error: argument --flag-share: 1.5 is not in [0, 1]"


def test_examples_per_language_and_reason(planted):
    out, _, kept, dropped, page = planted
    fate = {r["id"]: (r["lang"], "kept") for r in rows(out / "data", ["id", "lang"])}
    fate.update({r["id"]: (r["lang"] or "und", r["reason"]) for r in rows(out / "dropped", ["id", "lang", "reason"])})
    cells = {(lang, "kept"): n for lang, n in kept.items()}
    cells.update({cell: n for cell, n in dropped.items() if cell[1] != "quarantined"})
    seen = Counter()
    for heading, table in tables(page):
        lang = heading.split(":")[0]
        if not re.fullmatch(rf"{re.escape(lang)}: input \d+, kept \d+, dropped \d+", heading):
            continue
        for kind, doc_id, text in table[1:]:
            assert fate[doc_id] == (lang, kind), (heading, doc_id)  # shown under its own language and reason
            assert len(text) <= 200 + len(" ... (9999 chars)")
            seen[(lang, kind)] += 1
    assert dict(seen) == {cell: min(2, n) for cell, n in cells.items()}


def test_token_counts_equal_tokenizing_the_kept_texts(planted):
    from model.tokenizer import bundled_xlmr_tokenizer_json, load_tokenizer

    out, manifest, _, _, page = planted
    tok = load_tokenizer(bundled_xlmr_tokenizer_json())
    docs = rows(out / "data", ["lang", "text", "n_tokens"])
    expected = [len(tok(d["text"], add_special_tokens=False)["input_ids"]) for d in docs]
    assert [d["n_tokens"] for d in docs] == expected and min(expected) > 20
    per_lang = Counter()
    for d, n in zip(docs, expected):
        per_lang[d["lang"]] += n
    stats = pq.read_table(out / "stats" / "lang_stats.parquet").to_pylist()
    assert {s["lang"]: s["tokens"] for s in stats} == per_lang
    assert manifest["extra"]["tokens"] == {"tokenizer": "FacebookAI/xlm-roberta-base", "kept": sum(expected)}
    shown = table_after(page, "Languages")
    col = shown[0].index("tokens")
    assert {r[0]: int(r[col]) for r in shown[1:]} == per_lang


def test_the_corpus_page_fits_without_a_browser(planted):
    assert static_problems(planted[4]) == []
