"""The corpus audit's language x reason matrix: how much of each language's input each filter dropped.

Counted from the corpus output's own tables: ``data/`` (kept, column ``lang``), ``dropped/``
(columns ``lang`` and ``reason``) and ``quarantine/`` (one row per unreadable record). A
language's *input* is every record counted under it: kept + dropped (+ quarantined for ``und``).

Which language a record is counted under: the language the identifier gave it. That is the
document's language for kept, quality-rejected, duplicate and ``eval_overlap`` records, and the identifier's own
label (a language outside ``lid.languages``) for ``lang_not_in_set`` / ``low_lang_score``. Records
dropped before identification (``empty_text``, ``too_long``: normalisation runs first, then the
identifier, then the quality filters, then de-duplication) have no language and are counted under
``und``, as are quarantined records (column ``quarantined``).

Flags: a language is flagged when one *filter* drops more than ``flag_share`` of its input.
``lang_not_in_set`` (a language outside the set is dropped by design) and ``quarantined``
(unreadable, not filtered) are shown in the matrix but never flag.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pyarrow.parquet as pq

UND = "und"
QUARANTINED = "quarantined"
NOT_FLAGGED = ("lang_not_in_set", QUARANTINED)
FLAG_SHARE = 0.3  # default of `mgte audit --flag-share`


@dataclass
class LangMatrix:
    kept: Counter = field(default_factory=Counter)  # lang -> kept records
    dropped: Counter = field(default_factory=Counter)  # (lang, reason) -> dropped records

    def inputs(self, lang: str) -> int:
        return self.kept[lang] + sum(n for (lg, _), n in self.dropped.items() if lg == lang)

    @property
    def langs(self) -> list[str]:
        """Every language with input, largest input first."""
        names = set(self.kept) | {lang for lang, _ in self.dropped}
        return sorted(names, key=lambda lang: (-self.inputs(lang), lang))

    @property
    def reasons(self) -> list[str]:
        """Every reason with a drop, most drops first."""
        totals = Counter()
        for (_, reason), n in self.dropped.items():
            totals[reason] += n
        return sorted(totals, key=lambda r: (-totals[r], r))

    def share(self, lang: str, reason: str) -> float:
        total = self.inputs(lang)
        return self.dropped[(lang, reason)] / total if total else 0.0

    def cells(self, *, skip: Iterable[str] = ()) -> list[tuple[str, str, float, int, int]]:
        """(lang, reason, share, dropped, input) of every non-empty cell, worst share first (ties: more drops)."""
        skip = set(skip)
        rows = [(lang, reason, self.share(lang, reason), n, self.inputs(lang))
                for (lang, reason), n in self.dropped.items() if n and reason not in skip]
        return sorted(rows, key=lambda c: (-c[2], -c[3], c[0], c[1]))

    def flagged(self, flag_share: float) -> dict[str, list[tuple[str, float, int, int]]]:
        """lang -> [(reason, share, dropped, input)] of the filters that drop more than ``flag_share`` of it."""
        out: dict[str, list] = {}
        for lang, reason, share, n, total in self.cells(skip=NOT_FLAGGED):
            if share > flag_share:
                out.setdefault(lang, []).append((reason, share, n, total))
        return out

    @property
    def total(self) -> int:
        return sum(self.kept.values()) + sum(self.dropped.values())


def _lang(value) -> str:
    return value if value not in (None, "") else UND


def _column_rows(root: Path, rels: Iterable[str], columns: list[str]):
    for rel in rels:
        pf = pq.ParquetFile(root / rel)
        for batch in pf.iter_batches(columns=[c for c in columns if c in pf.schema_arrow.names], batch_size=8192):
            yield batch.to_pylist()


def _grouped(path: Path, columns: list[str]) -> dict[tuple, int]:
    """Rows of one parquet file per value of ``columns`` (nulls a value of their own; a missing
    column is all null), counted by Arrow without making Python rows."""
    import pyarrow as pa
    import pyarrow.compute as pc

    pf = pq.ParquetFile(path)
    present = [c for c in columns if c in pf.schema_arrow.names]
    table = pf.read(columns=present) if present else pa.table({"_": pa.nulls(pf.metadata.num_rows)})
    key = present or ["_"]
    counted = table.group_by(key).aggregate([(key[0], "count", pc.CountOptions(mode="all"))]).to_pylist()
    return {tuple(r.get(c) for c in columns): r[f"{key[0]}_count"] for r in counted}


def count_matrix(root: Path, outputs: dict[str, list[str]]) -> LangMatrix:
    """The matrix recounted from the output's data/, dropped/ and quarantine/ tables."""
    m = LangMatrix()
    for rel in outputs.get("data", []):
        for (lang,), n in _grouped(root / rel, ["lang"]).items():
            m.kept[_lang(lang)] += n
    for rel in outputs.get("dropped", []):
        for (reason, lang), n in _grouped(root / rel, ["reason", "lang"]).items():
            m.dropped[(_lang(lang), reason)] += n
    for rel in outputs.get("quarantine", []):
        n = pq.ParquetFile(root / rel).metadata.num_rows
        if n:
            m.dropped[(UND, QUARANTINED)] += n
    return m


def examples(root: Path, outputs: dict[str, list[str]], m: LangMatrix, per_cell: int) -> dict:
    """Up to ``per_cell`` kept records per language and dropped records per (language, reason):
    ``{(lang, None | reason): [{"id", "text"}]}``. Reads only until every cell is full."""
    want = {(lang, None): min(per_cell, n) for lang, n in m.kept.items() if n}
    want.update({cell: min(per_cell, n) for cell, n in m.dropped.items() if n and cell[1] != QUARANTINED})
    got: dict = {cell: [] for cell in want}

    def take(rels, fate_of):
        open_cells = sum(1 for cell in want if len(got[cell]) < want[cell])
        for rows in _column_rows(root, rels, ["id", "lang", "reason", "text"]):
            if not open_cells:
                return
            for r in rows:
                cell = (_lang(r.get("lang")), fate_of(r))
                if cell in got and len(got[cell]) < want[cell]:
                    got[cell].append({"id": r["id"], "text": r.get("text") or ""})
                    open_cells -= len(got[cell]) == want[cell]

    take(outputs.get("data", []), lambda r: None)
    take(outputs.get("dropped", []), lambda r: r["reason"])
    return got
