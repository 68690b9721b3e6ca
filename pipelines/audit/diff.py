"""``mgte audit diff OLD NEW``: two finished outputs of the same stage side by side, as an HTML
page and ``diff.json`` (default ``NEW/audit/diff/``).

Every stage: counts and drops per reason, old / new / delta. Then per stage:

- corpus: kept documents per language (from each build's ``lang_stats``), dropped records per
  language, documents added and removed by id (all of them in ``added.parquet`` /
  ``removed.parquet``: id, lang, source, path, line; the first ``IDS_LISTED`` in ``diff.json``; a
  few with their texts on the page) and the ids kept by both whose text changed;
- mine: per source rows, queries, drops, suspected false negatives and score distributions
  (:func:`pipelines.audit.mine.summary`), mean rank, queries added and removed by ``query_id``;
- eval: every measure per method, and per method and language, old / new / delta.

Two outputs of different stages are refused in one line naming both.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from foundation.errors import MgteError, UsageError
from foundation.ledger import atomic_write_json, atomic_write_parquet
from pipelines.audit import _manifest, _readable
from pipelines.audit.page import STYLE, esc, read_rows, short, table, write_page

IDS_LISTED = 1000  # ids per list in diff.json (the parquet files hold all)
EXAMPLES = 5  # added / removed documents shown with their text
DOC_COLUMNS = ["id", "lang", "source", "path", "line"]


def side(old: dict, new: dict) -> dict:
    """{key: {old, new, delta}} over the keys of both (a missing count is 0)."""
    return {k: {"old": old.get(k, 0), "new": new.get(k, 0), "delta": new.get(k, 0) - old.get(k, 0)}
            for k in sorted(set(old) | set(new), key=str)}


def _metric_side(old: dict, new: dict, keys) -> dict:
    """{key: {old, new, delta}} for measures; delta is null when one side lacks it."""
    out = {}
    for k in keys:
        a, b = old.get(k), new.get(k)
        out[k] = {"old": a, "new": b, "delta": (b - a) if isinstance(a, (int, float)) and isinstance(b, (int, float))
                  else None}
    return out


def _side_table(label: str, sides: dict) -> str:
    return table([label, "old", "new", "delta"],
                 [[k, v["old"], v["new"], _signed(v["delta"])] for k, v in sides.items()])


def _signed(delta):
    if delta is None:
        return ""
    return f"{delta:+.4f}" if isinstance(delta, float) else f"{delta:+d}"


# ---- corpus ---------------------------------------------------------------------------------------
def _kept_per_language(root: Path, outputs: dict) -> dict[str, int]:
    if outputs.get("lang_stats"):
        return {r["lang"]: int(r["docs"]) for r in read_rows(root, outputs["lang_stats"], ["lang", "docs"])}
    return dict(Counter(r["lang"] for r in read_rows(root, outputs.get("data", []), ["lang"])))


def _docs(root: Path, files: list[str], columns: list[str]) -> pa.Table:
    if not files:
        return pa.table({c: pa.array([], pa.string() if c != "line" else pa.int64()) for c in columns})
    return pa.concat_tables([pq.read_table(root / f, columns=columns) for f in files], promote_options="default")


def _texts(root: Path, files: list[str], ids: list[str]) -> dict[str, str]:
    if not ids or not files:
        return {}
    found = {}
    for f in files:
        for r in pq.read_table(root / f, columns=["id", "text"], filters=[("id", "in", ids)]).to_pylist():
            found.setdefault(r["id"], r["text"])
    return found


def _chain(manifest: dict) -> list[str]:
    """The builds an incremental corpus build was built against (transitively, oldest first)."""
    return [str(b["path"]) for b in (manifest.get("extra") or {}).get("previous", [])]


def _chain_ids(manifest: dict) -> list[pa.Array]:
    """The kept ids of every build of :func:`_chain`, through the one reader of stage outputs."""
    from foundation.ledger import stage_output_files
    from storage_schemas.corpus import CLEAN_DOC

    arrays = []
    for path in _chain(manifest):
        files = stage_output_files(path, "data", CLEAN_DOC, ["id"], kind="corpus")
        if files:
            arrays.append(pq.read_table(files, columns=["id"])["id"].combine_chunks().cast(pa.string()))
    return arrays


def _corpus(old: Path, new: Path, mo: dict, mn: dict, out: Path) -> tuple[dict, list[str]]:
    oo, on = mo["outputs"], mn["outputs"]
    langs = side(_kept_per_language(old, oo), _kept_per_language(new, on))
    dropped_langs = side(*(dict(Counter(r.get("lang") or "und" for r in read_rows(root, o.get("dropped", []), ["lang"])))
                           for root, o in ((old, oo), (new, on))))
    a = _docs(old, oo.get("data", []), DOC_COLUMNS + ["text_hash"])
    b = _docs(new, on.get("data", []), DOC_COLUMNS + ["text_hash"])
    # an incremental build holds only its own documents: each side counts with the builds it was built against
    seen_old = pa.concat_arrays([a["id"].combine_chunks().cast(pa.string()), *_chain_ids(mo)])
    seen_new = pa.concat_arrays([b["id"].combine_chunks().cast(pa.string()), *_chain_ids(mn)])
    added = b.filter(pc.invert(pc.is_in(b["id"], value_set=seen_old))).sort_by("id")
    removed = a.filter(pc.invert(pc.is_in(a["id"], value_set=seen_new))).sort_by("id")
    both = a.select(["id", "text_hash"]).join(b.select(["id", "text_hash"]), "id", right_suffix="_new")
    changed = sorted(both.filter(pc.not_equal(both["text_hash"], both["text_hash_new"]))["id"].to_pylist())
    atomic_write_parquet(out / "added.parquet", added.select(DOC_COLUMNS))
    atomic_write_parquet(out / "removed.parquet", removed.select(DOC_COLUMNS))
    examples = {}
    for name, t, root, files in (("added", added, new, on.get("data", [])), ("removed", removed, old, oo.get("data", []))):
        rows = t.slice(0, EXAMPLES).select(DOC_COLUMNS).to_pylist()
        texts = _texts(root, files, [r["id"] for r in rows])
        examples[name] = [{**r, "text": short(texts.get(r["id"], ""), 300)} for r in rows]
    docs = {"added": added.num_rows, "removed": removed.num_rows, "changed_text": len(changed),
            "added_ids": added["id"].to_pylist()[:IDS_LISTED], "removed_ids": removed["id"].to_pylist()[:IDS_LISTED],
            "changed_text_ids": changed[:IDS_LISTED], "examples": examples,
            "files": {"added": "added.parquet", "removed": "removed.parquet"}}
    incremental = str(old.resolve()) in {str(Path(p).resolve()) for p in _chain(mn)}
    facts = {"incremental": incremental, "kept_per_language": langs, "dropped_per_language": dropped_langs,
             "documents": docs}
    parts = []
    if incremental:
        parts.append(f"<p id='incremental'>NEW was built against OLD (previous builds: {len(_chain(mn))}): documents "
                     f"added and removed count every build of each chain; languages and reasons are per build</p>")
    if oo.get("lang_stats_cumulative") and on.get("lang_stats_cumulative"):
        facts["kept_per_language_cumulative"] = side(
            *({r["lang"]: int(r["docs"]) for r in read_rows(root, o["lang_stats_cumulative"], ["lang", "docs"])}
              for root, o in ((old, oo), (new, on))))
    parts += ["<h2>Kept documents per language (this build)</h2>" + _side_table("lang", langs),
             "<h2>Dropped records per language</h2>" + _side_table("lang", dropped_langs),
             *(["<h2>Kept documents per language, every build (cumulative)</h2>"
                + _side_table("lang", facts["kept_per_language_cumulative"])]
               if "kept_per_language_cumulative" in facts else []),
             f"<h2>Documents added and removed (by id)</h2><p id='documents'>{docs['added']} added, "
             f"{docs['removed']} removed, {docs['changed_text']} kept by both with another text "
             f"(all ids in added.parquet / removed.parquet)</p>"]
    for name in ("added", "removed"):
        parts.append(f"<h3>{name} (first {len(examples[name])} by id)</h3>" + table(
            ["id", "lang", "source", "where", "text"],
            [[e["id"], e["lang"], e["source"], f"{Path(e['path']).name}:{e['line']}", e["text"]]
             for e in examples[name]]))
    return facts, parts


# ---- mine -----------------------------------------------------------------------------------------
MINE_STATS = ("rows", "queries", "dropped", "false_negatives")


def _mine_side(root: Path, manifest: dict) -> tuple[dict, set[str], dict]:
    from pipelines.audit.mine import COLUMNS, summary

    rows = read_rows(root, manifest["outputs"].get("data", []), COLUMNS)
    dropped = read_rows(root, manifest["outputs"].get("dropped", []), ["query_id", "reason", "source"])
    ranks = [k for r in rows for k in r["negative_ranks"] if k > 0]
    facts = summary(rows, dropped)
    facts["mean_rank"] = sum(ranks) / len(ranks) if ranks else None
    queries = {r["query_id"]: r["query"] for r in rows}
    return facts, set(queries), queries


def _mine(old: Path, new: Path, mo: dict, mn: dict, out: Path) -> tuple[dict, list[str]]:
    fa, qa, texts_a = _mine_side(old, mo)
    fb, qb, texts_b = _mine_side(new, mn)
    sources = {}
    for s in sorted(set(fa["sources"]) | set(fb["sources"]), key=str):
        sa, sb = fa["sources"].get(s, {}), fb["sources"].get(s, {})
        entry = side({k: sa.get(k, 0) for k in MINE_STATS}, {k: sb.get(k, 0) for k in MINE_STATS})
        for dist in ("positive", "negative", "gap"):
            for stat in ("mean", "p10", "p50", "p90"):
                entry[f"{dist}_{stat}"] = _metric_side((sa.get(dist) or {}), (sb.get(dist) or {}), [stat])[stat]
        sources[s] = entry
    added, removed = sorted(qb - qa), sorted(qa - qb)
    facts = {"overall": side({k: fa[k] for k in ("rows", "queries", "false_negatives_total", "given_negatives")},
                             {k: fb[k] for k in ("rows", "queries", "false_negatives_total", "given_negatives")}),
             "mean_rank": _metric_side({"mean_rank": fa["mean_rank"]}, {"mean_rank": fb["mean_rank"]},
                                       ["mean_rank"])["mean_rank"],
             "sources": sources,
             "queries": {"added": len(added), "removed": len(removed), "added_ids": added[:IDS_LISTED],
                         "removed_ids": removed[:IDS_LISTED],
                         "examples": {"added": [{"query_id": q, "query": short(texts_b[q], 300)} for q in added[:EXAMPLES]],
                                      "removed": [{"query_id": q, "query": short(texts_a[q], 300)}
                                                  for q in removed[:EXAMPLES]]}}}
    cols = ["rows", "queries", "dropped", "false_negatives", "positive_mean", "negative_mean", "gap_mean"]
    parts = ["<h2>Overall</h2>" + _side_table("measure", {**facts["overall"], "mean rank (mined)": facts["mean_rank"]}),
             "<h2>Per source (old / new / delta)</h2>" + table(
                 ["source", *cols],
                 [[s, *[_cell(e[c]) for c in cols]] for s, e in sources.items()]),
             f"<h2>Queries added and removed (by query_id)</h2><p id='queries'>{len(added)} added, "
             f"{len(removed)} removed</p>"]
    for name in ("added", "removed"):
        ex = facts["queries"]["examples"][name]
        parts.append(f"<h3>{name} (first {len(ex)})</h3>" + table(["query_id", "query"],
                                                                 [[e["query_id"], e["query"]] for e in ex]))
    return facts, parts


def _cell(v: dict) -> str:
    fmt = (lambda x: "-" if x is None else (f"{x:.4f}" if isinstance(x, float) else str(x)))
    return f"{fmt(v['old'])} / {fmt(v['new'])} / {_signed(v['delta']) or '-'}"


# ---- eval -----------------------------------------------------------------------------------------
def _metrics(root: Path) -> dict:
    path = root / "metrics.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MgteError(f"{path}: missing; the eval output is incomplete (rerun mgte eval into a new --output)") from None
    except ValueError as exc:
        raise MgteError(f"{path}: not JSON ({exc})") from None


def _eval(old: Path, new: Path, mo: dict, mn: dict, out: Path) -> tuple[dict, list[str]]:
    from pipelines.eval.metrics import MEASURES

    a, b = _metrics(old), _metrics(new)
    keys = [*MEASURES, "n_queries"]
    ma, mb = a.get("methods") or {}, b.get("methods") or {}
    methods = {m: _metric_side(ma.get(m, {}), mb.get(m, {}), keys) for m in sorted(set(ma) | set(mb))}
    per_language = {}
    for m in methods:
        la, lb = (ma.get(m) or {}).get("per_language", {}), (mb.get(m) or {}).get("per_language", {})
        per_language[m] = {lg: _metric_side(la.get(lg, {}), lb.get(lg, {}), keys) for lg in sorted(set(la) | set(lb))}
    facts = {"task": {"old": _task(mo), "new": _task(mn)},
             "final_method": {"old": a.get("final_method"), "new": b.get("final_method")},
             "final": _metric_side(a, b, keys), "methods": methods, "per_language": per_language}
    parts = [f"<h2>Evaluation</h2><p id='task'>task {esc(facts['task']['old'])} -> {esc(facts['task']['new'])}; "
             f"final method {esc(a.get('final_method'))} -> {esc(b.get('final_method'))}</p>",
             "<h2>Final method</h2>" + _side_table("measure", facts["final"]),
             "<h2>Per method (old / new / delta)</h2>" + table(
                 ["method", *keys], [[m, *[_cell(v[k]) for k in keys]] for m, v in methods.items()])]
    for m, langs in per_language.items():
        if langs:
            parts.append(f"<h3>{esc(m)} per language (old / new / delta)</h3>" + table(
                ["lang", *keys], [[lg, *[_cell(v[k]) for k in keys]] for lg, v in langs.items()]))
    return facts, parts


def _task(manifest: dict) -> str:
    inputs = (manifest.get("config") or {}).get("input") or []
    return ", ".join(Path(str(p)).name for p in inputs) if isinstance(inputs, list) else str(inputs)


DIFFS = {"corpus": _corpus, "mine": _mine, "eval": _eval}


def write_diff(old: Path, new: Path, out: Path | None = None) -> Path:
    """Write ``index.html`` and ``diff.json`` comparing the stage outputs ``old`` and ``new`` into
    ``out`` (default ``new/audit/diff``); returns the page."""
    old, new = Path(old), Path(new)
    so, sn = _manifest(old), _manifest(new)
    if so["stage"] != sn["stage"]:
        raise UsageError(f"audit diff compares two outputs of one stage: {old} is a {so['stage']} output, "
                         f"{new} a {sn['stage']} output")
    mo, mn = _readable(old, so), _readable(new, sn)
    stage = str(so["stage"])
    out = Path(out) if out else new / "audit" / "diff"
    out.mkdir(parents=True, exist_ok=True)
    facts = {"stage": stage,
             "old": {"path": str(old), "config_hash": so["config_hash"], "finished": so.get("finished")},
             "new": {"path": str(new), "config_hash": sn["config_hash"], "finished": sn.get("finished")},
             "counts": side(so["counts"], sn["counts"]),
             "dropped_by_reason": side(so["dropped_by_reason"], sn["dropped_by_reason"])}
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>mgte {esc(stage)} diff</title>{STYLE}"
             f"</head><body><h1>{esc(stage)} diff</h1>",
             f"<p>old <code>{esc(old)}</code> (finished {esc(so.get('finished'))}, config hash "
             f"<code>{esc(so['config_hash'])}</code>)<br>new <code>{esc(new)}</code> (finished "
             f"{esc(sn.get('finished'))}, config hash <code>{esc(sn['config_hash'])}</code>)</p>",
             "<h2>Counts</h2>" + _side_table("count", facts["counts"]),
             "<h2>Dropped by reason</h2>" + _side_table("reason", facts["dropped_by_reason"])]
    if stage in DIFFS:
        own, html = DIFFS[stage](old, new, mo, mn, out)
        facts[stage] = own
        parts += html
    atomic_write_json(out / "diff.json", facts)
    parts.append("<p>Machine-readable: <a href='diff.json'>diff.json</a></p></body></html>")
    return write_page(out, parts)


__all__ = ["write_diff"]
