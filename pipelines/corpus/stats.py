"""Per-language statistics and the language sampling table of mGTE eq. 1."""

from __future__ import annotations

import pyarrow as pa

from foundation.sampling import eq1


def language_stats(docs: pa.Table, alpha: float, with_tokens: bool) -> list[dict]:
    """Rows of the LANG_STATS table from the kept documents (lang, n_chars, n_bytes, n_tokens)."""
    if docs.num_rows == 0:
        return []
    aggs = [("lang", "count"), ("n_chars", "sum"), ("n_bytes", "sum")]
    if with_tokens:
        aggs.append(("n_tokens", "sum"))
    grouped = docs.group_by("lang").aggregate(aggs).to_pylist()
    probs = eq1({g["lang"]: g["lang_count"] for g in grouped}, alpha)
    rows = []
    for g in sorted(grouped, key=lambda g: (-g["lang_count"], g["lang"])):
        p, q = probs[g["lang"]]
        rows.append({"lang": g["lang"], "docs": g["lang_count"], "chars": g["n_chars_sum"], "bytes": g["n_bytes_sum"],
                     "tokens": g.get("n_tokens_sum") if with_tokens else None, "p": p, "q": q, "alpha": alpha})
    return rows


def files_language_stats(files: list, alpha: float, with_tokens: bool) -> list[dict]:
    """:func:`language_stats` over the documents of ``files`` (Parquet), summed file by file: one
    file's four columns in memory at a time, not every kept document's (~15 MB at 1M documents,
    ~60 GB at the paper's 2B)."""
    import pyarrow.parquet as pq

    columns = ["lang", "n_chars", "n_bytes", "n_tokens"]
    return combine_stats([language_stats(pq.read_table(f, columns=columns), alpha, with_tokens) for f in files], alpha)


def combine_stats(tables: list[list[dict]], alpha: float) -> list[dict]:
    """LANG_STATS rows summed over several tables (e.g. one per build), with eq. 1 redone."""
    totals: dict[str, dict] = {}
    for rows in tables:
        for r in rows:
            t = totals.setdefault(r["lang"], {"docs": 0, "chars": 0, "bytes": 0, "tokens": 0, "has_tokens": True})
            for k in ("docs", "chars", "bytes"):
                t[k] += r[k]
            if r.get("tokens") is None:
                t["has_tokens"] = False
            else:
                t["tokens"] += r["tokens"]
    if not totals:
        return []
    probs = eq1({lang: t["docs"] for lang, t in totals.items()}, alpha)
    return [{"lang": lang, "docs": t["docs"], "chars": t["chars"], "bytes": t["bytes"],
             "tokens": t["tokens"] if t["has_tokens"] else None, "p": probs[lang][0], "q": probs[lang][1],
             "alpha": alpha} for lang, t in sorted(totals.items(), key=lambda kv: (-kv[1]["docs"], kv[0]))]
