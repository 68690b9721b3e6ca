"""The bundled fine-tuning sets (data/finetune/, written by data/build_finetune.py): BEIR directories
with a train and a held-out split over disjoint queries, several languages, no text shared with the
pre-training pairs (data/pairs) or the evaluation set (data/eval), files matching their build_info."""

import hashlib
import json
import unicodedata
from pathlib import Path

from pipelines.eval.beir import read_beir

DATA = Path(__file__).resolve().parents[2] / "data"
SETS = DATA / "finetune"


def norm(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())


def texts_of(paths) -> set[str]:
    import gzip

    out = set()
    for path in paths:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                rec = json.loads(line)
                out |= {norm(rec[k]) for k in ("query", "positive", "text") if rec.get(k)}
    return out


def test_sets_have_disjoint_train_and_test_queries_and_three_languages():
    info = json.loads((SETS / "build_info.json").read_text())
    assert sorted(info["sets"]) == sorted(p.name for p in SETS.iterdir() if p.is_dir()) and len(info["sets"]) >= 2
    langs = set()
    for name in info["sets"]:
        train, test = read_beir([str(SETS / name)], "train"), read_beir([str(SETS / name)], "test")
        for split in (train, test):
            assert not split.quarantine and split.stats["qrels_doc_not_in_corpus"] == 0
        assert train.queries.ids and test.queries.ids and not set(train.queries.ids) & set(test.queries.ids)
        langs |= set(train.query_langs) | set(test.query_langs)
    assert len(langs) >= 3, langs


def test_no_text_is_a_pretraining_pair_or_an_eval_text():
    used = texts_of(sorted((DATA / "pairs").rglob("*.jsonl*")) + sorted((DATA / "eval").rglob("*.jsonl*")))
    own = texts_of(sorted(SETS.rglob("*.jsonl")))
    assert own and not own & used


def test_files_match_build_info():
    files = json.loads((SETS / "build_info.json").read_text())["files"]
    assert files == {str(p.relative_to(SETS)): hashlib.sha256(p.read_bytes()).hexdigest()
                     for p in sorted(SETS.rglob("*")) if p.is_file() and p.name != "build_info.json"}
