"""Fixtures for the evaluation tests: small BEIR directories, tiny real models, and an independent
pytrec_eval computation of metrics from a TREC run file (what the acceptance check does)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

BUNDLED_BEIR = Path(__file__).resolve().parents[3] / "data" / "eval" / "tiny-beir"


def write_beir(root: Path, docs, queries, qrels_lines, *, header: str | None = "query-id\tcorpus-id\tscore") -> Path:
    """docs: [(id, title, text, lang)], queries: [(id, text, lang)], qrels_lines: raw tsv lines."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "qrels").mkdir(exist_ok=True)
    with open(root / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for doc_id, title, text, lang in docs:
            rec = {"_id": doc_id, "title": title, "text": text}
            if lang:
                rec["lang"] = lang
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    with open(root / "queries.jsonl", "w", encoding="utf-8") as fh:
        for qid, text, lang in queries:
            rec = {"_id": qid, "text": text}
            if lang:
                rec["lang"] = lang
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    lines = ([header] if header else []) + list(qrels_lines)
    (root / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


SMALL_DOCS = [
    ("d01", "Cats", "Cats are small domestic animals that purr and hunt mice.", "en"),
    ("d02", "Dogs", "Dogs bark, guard houses and are loyal companions.", "en"),
    ("d03", "", "Paris is the capital and largest city of France.", "en"),
    ("d04", "Python", "Python is a programming language with dynamic typing.", "en"),
    ("d05", "Berlin", "Berlin ist die Hauptstadt von Deutschland.", "de"),
    ("d06", "Katzen", "Katzen sind kleine Haustiere, die schnurren.", "de"),
    ("d07", "东京", "东京是日本的首都，人口众多。", "zh"),
    ("d08", "猫", "猫是一种常见的家养宠物，会发出呼噜声。", "zh"),
    ("d09", "Rivers", "The Nile and the Amazon are the longest rivers on Earth.", "en"),
    ("d10", "Mountains", "Mount Everest is the highest mountain above sea level.", "en"),
    ("d11", "Rust", "Rust is a systems programming language focused on safety.", "en"),
    ("d12", "Madrid", "Madrid es la capital de España.", "es"),
]
SMALL_QUERIES = [
    ("q1", "which animal purrs", "en"),
    ("q2", "capital city of France", "en"),
    ("q3", "programming language", "en"),
    ("q4", "Hauptstadt Deutschland", "de"),
    ("q5", "日本的首都", "zh"),
    ("q6", "highest mountain", "en"),
    ("q7", "a query nobody judged", "en"),
]
SMALL_QRELS = ["q1\td01\t2", "q1\td06\t1", "q1\td08\t1", "q2\td03\t1", "q3\td04\t1", "q3\td11\t1",
               "q4\td05\t1", "q5\td07\t1", "q6\td10\t1", "q6\td09\t0", "q6\tmissing-doc\t1"]


@pytest.fixture()
def small_beir(tmp_path) -> Path:
    return write_beir(tmp_path / "beir", SMALL_DOCS, SMALL_QUERIES, SMALL_QRELS)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Tiny (2-layer, 64-wide) mgte models with the real XLM-R tokenizer: TRM, MLM encoder, reranker."""
    import torch

    import model
    from model.tokenizer import bundled_xlmr_tokenizer_json, load_tokenizer

    root = tmp_path_factory.mktemp("models")
    tok = load_tokenizer(bundled_xlmr_tokenizer_json())
    torch.manual_seed(0)
    trm = model.MGTEForEmbedding(model.MGTEConfig.tiny())
    with torch.no_grad():  # a sparse head that fires on most tokens
        trm.classifier.bias.fill_(0.5)
    out = {"trm": model.save_pretrained(trm, root / "trm", tokenizer=tok),
           "mlm": model.save_pretrained(model.MGTEForMaskedLM(model.MGTEConfig.tiny()), root / "mlm", tokenizer=tok),
           "reranker": model.save_pretrained(model.MGTEForSequenceClassification(model.MGTEConfig.tiny(num_labels=1)),
                                             root / "reranker", tokenizer=tok)}
    return out


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    """A tiny random BERT encoder and cross-encoder using all-MiniLM-L6-v2's tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, BertModel

    from pipelines.embedding import resolve_model_dir

    tok = AutoTokenizer.from_pretrained(str(resolve_model_dir("all-MiniLM-L6-v2")))
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    root = tmp_path_factory.mktemp("bert")
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(root / "enc")
    tok.save_pretrained(root / "enc")
    BertForSequenceClassification(BertConfig(**{**cfg.to_dict(), "num_labels": 1})).save_pretrained(root / "ce")
    tok.save_pretrained(root / "ce")
    return root


def pytrec_from_files(run_path: Path, qrels_path: Path, queries: dict[str, str] | None = None) -> dict:
    """metrics.json's numbers recomputed with pytrec_eval from a TREC run file and a BEIR qrels file.

    mrr@10 = recip_rank on the run cut to the 10 best documents in trec_eval order. With
    ``queries`` ({query id: lang}) also per language.
    """
    import numpy as np
    import pytrec_eval

    qrels: dict[str, dict[str, int]] = {}
    for i, line in enumerate(Path(qrels_path).read_text(encoding="utf-8").splitlines()):
        parts = line.split()
        if len(parts) == 4:  # TREC qrels: qid iter docid rel
            parts = [parts[0], parts[2], parts[3]]
        if i == 0 or len(parts) != 3:
            continue
        try:
            grade = float(parts[2])
        except ValueError:
            continue
        if grade.is_integer():
            qrels.setdefault(parts[0], {})[parts[1]] = int(grade)
    run: dict[str, dict[str, float]] = {}
    for line in Path(run_path).read_text(encoding="utf-8").splitlines():
        q, _, d, _, s, _ = line.split()
        run.setdefault(q, {})[d] = float(s)
    # trec_eval order: score descending, ties by doc id descending (two stable sorts)
    top10 = {q: dict(sorted(sorted(docs.items(), reverse=True), key=lambda kv: -kv[1])[:10])
             for q, docs in run.items()}
    ev = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.10", "recall.20", "recall.100", "map"})
    per_q = ev.evaluate(run)
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    names = {"ndcg@10": "ndcg_cut_10", "recall@10": "recall_10", "recall@20": "recall_20", "recall@100": "recall_100", "map": "map"}

    def mean(qids):
        out = {k: float(np.mean([per_q[q][v] for q in qids])) for k, v in names.items()}
        out["mrr@10"] = float(np.mean([rr[q]["recip_rank"] for q in qids]))
        out["n_queries"] = len(qids)
        return out

    result = mean(sorted(per_q))
    if queries is not None:
        by_lang: dict[str, list[str]] = {}
        for q in per_q:
            by_lang.setdefault(queries.get(q, "und"), []).append(q)
        result["per_language"] = {lang: mean(qs) for lang, qs in by_lang.items()}
    return result


def assert_metrics_match(ours: dict, ref: dict, tol: float = 1e-6) -> None:
    for key in ("ndcg@10", "recall@10", "recall@20", "recall@100", "mrr@10", "map"):
        assert abs(ours[key] - ref[key]) < tol, (key, ours[key], ref[key])
    assert ours["n_queries"] == ref["n_queries"]
    for lang, values in ref.get("per_language", {}).items():
        assert_metrics_match(ours["per_language"][lang], values, tol)
    if "per_language" in ref:
        assert set(ours["per_language"]) == set(ref["per_language"])
