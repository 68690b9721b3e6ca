"""Loading and encoding with every kind of model `mgte eval` / `mgte mine` accept: our TRM and MLM
directories, a sentence-transformers directory (all-MiniLM-L6-v2, offline), a plain Hugging Face
encoder, and cross-encoders (our reranker head, HF sequence classification)."""

import numpy as np
import pytest
import torch

from pipelines.embedding import (
    SparseVectors,
    load_embedder,
    load_reranker,
    model_kind,
    resolve_model_dir,
    tokenize_counted,
)

TEXTS = ["a short text", "Katzen sind kleine Haustiere, die schnurren. " * 30, "东京是日本的首都"]


def test_minilm_alias_resolves_to_the_bundled_sentence_transformers_dir():
    path = resolve_model_dir("all-MiniLM-L6-v2")
    assert (path / "modules.json").is_file() and model_kind(path) == "sentence-transformers"
    assert resolve_model_dir("sentence-transformers/all-MiniLM-L6-v2") == path


def test_unknown_model_name_fails_naming_it(monkeypatch):
    from pipelines.embedding import ModelLoadError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="no-such-org/no-such-model"):
        resolve_model_dir("no-such-org/no-such-model")


@pytest.fixture(scope="module")
def trm(tiny_models):
    return load_embedder(str(tiny_models["trm"]), device="cpu")


def test_tokenize_counted_cuts_and_counts(trm):
    tok = trm.tokenizer
    ids, n_cut = tokenize_counted(tok, TEXTS, 16)
    assert n_cut == 1 and len(ids[1]) == 16 and ids[1][0] == tok.cls_token_id and ids[1][-1] == tok.sep_token_id
    assert ids[0] == tok(TEXTS[0])["input_ids"]


def test_mgte_trm_dense_and_sparse(trm, tiny_models):
    import model

    emb = trm
    assert emb.kind == "mgte" and emb.has_sparse
    out = emb.encode(TEXTS, max_length=64, max_tokens=128, sparse=True)
    assert out.dense.shape == (3, 64) and out.n_truncated == 1 and out.max_length == 64
    np.testing.assert_allclose(np.linalg.norm(out.dense, axis=1), 1.0, rtol=1e-5)
    # reference: the padded forward of the same model, [CLS] of each text
    ref_model = model.load_pretrained(tiny_models["trm"], cls=model.MGTEForEmbedding, with_tokenizer=False).eval()
    enc = emb.tokenizer(TEXTS, truncation=True, max_length=64, padding=True, return_tensors="pt")
    with torch.no_grad():
        cls = ref_model(enc["input_ids"], enc["attention_mask"]).dense.numpy()
    cls /= np.linalg.norm(cls, axis=1, keepdims=True)
    np.testing.assert_allclose(out.dense, cls, atol=1e-5)
    assert isinstance(out.sparse, SparseVectors) and len(out.sparse) == 3
    terms, weights = out.sparse.row(0)
    assert set(terms.tolist()) <= set(enc["input_ids"][0].tolist()) - {0, 1, 2, 3} and (weights > 0).all()


def test_encode_chunks_streams_and_equals_one_encode(trm):
    texts = TEXTS * 3
    pulled = []

    def stream():
        for t in texts:
            pulled.append(t)
            yield t

    whole = trm.encode(texts, max_length=64, max_tokens=128, sparse=True)
    chunks = trm.encode_chunks(stream(), chunk_size=4, max_length=64, max_tokens=128, sparse=True)
    first = next(chunks)
    assert len(pulled) == 4  # lazily: one chunk of the stream in memory at a time
    parts = [first, *chunks]
    assert [len(p.dense) for p in parts] == [4, 4, 1]
    np.testing.assert_allclose(np.concatenate([p.dense for p in parts]), whole.dense, atol=1e-5)
    assert sum(p.n_truncated for p in parts) == whole.n_truncated == 3
    for k in range(len(texts)):
        assert parts[k // 4].sparse.row(k % 4)[0].tolist() == whole.sparse.row(k)[0].tolist()
    with pytest.raises(ValueError, match="chunk_size"):
        next(trm.encode_chunks(texts, chunk_size=0, max_length=64))


def test_mgte_mlm_encoder_has_no_sparse_head(tiny_models):
    emb = load_embedder(str(tiny_models["mlm"]), device="cpu")
    assert not emb.has_sparse
    assert emb.encode(TEXTS[:1], max_length=32, sparse=True).sparse is None


def test_sentence_transformers_minilm():
    emb = load_embedder("all-MiniLM-L6-v2", device="cpu")
    assert emb.kind == "sentence-transformers" and emb.context_length == 256
    out = emb.encode(TEXTS, max_length=8192)
    assert out.max_length == 256 and out.n_truncated == 1 and out.dense.shape == (3, 384)  # capped at 256
    direct = emb.model.encode(TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(out.dense, direct, atol=1e-5)
    assert emb.encode(TEXTS, max_length=8).n_truncated == 2


def test_hf_encoder_cls_and_mean_pooling(tiny_bert):
    from transformers import AutoModel, AutoTokenizer

    cls = load_embedder(str(tiny_bert / "enc"), device="cpu")
    mean = load_embedder(str(tiny_bert / "enc"), device="cpu", pooling="mean")
    assert cls.kind == "hf" and cls.context_length == 128
    a, b = cls.encode(TEXTS, max_length=512), mean.encode(TEXTS, max_length=512)
    assert a.max_length == 128 and a.n_truncated == 1
    tok, ref = AutoTokenizer.from_pretrained(tiny_bert / "enc"), AutoModel.from_pretrained(tiny_bert / "enc").eval()
    enc = tok(TEXTS, truncation=True, max_length=128, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = ref(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    for got, want in ((a.dense, hidden[:, 0]), (b.dense, (hidden * mask).sum(1) / mask.sum(1))):
        want = torch.nn.functional.normalize(want, dim=-1).numpy()
        np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("which", ["mgte", "hf"])
def test_rerankers_score_pairs_like_a_direct_call(which, tiny_models, tiny_bert):
    path = tiny_models["reranker"] if which == "mgte" else tiny_bert / "ce"
    rr = load_reranker(str(path), device="cpu")
    queries, docs = ["cats", "capital", "cats"], [TEXTS[1], TEXTS[2], TEXTS[0]]
    scores, n_cut = rr.score(queries, docs, max_length=32, max_tokens=64, max_batch=2)
    assert n_cut == 1 and scores.shape == (3,)
    enc = rr.tokenizer(queries, docs, truncation="longest_first", max_length=32, padding=True, return_tensors="pt")
    if "token_type_ids" not in rr.forward_args:
        enc.pop("token_type_ids", None)
    with torch.no_grad():
        direct = rr.model(**enc).logits[:, 0].numpy()
    np.testing.assert_allclose(scores, direct, atol=1e-4)


def test_a_training_output_directory_means_its_model(tiny_models, tmp_path):
    import shutil

    from pipelines.embedding import ModelLoadError

    shutil.copytree(tiny_models["mlm"], tmp_path / "train-out" / "model")
    assert resolve_model_dir(str(tmp_path / "train-out")) == (tmp_path / "train-out" / "model").resolve()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="not a model directory"):
        resolve_model_dir(str(tmp_path / "empty"))


def test_rerank_and_encode_say_how_far_they_are_in_the_log(tiny_bert, monkeypatch, caplog):
    """Off a terminal a cross-encoder's scoring and an encode loop log done/total, rate and time left
    (issue 25: 19 minutes of reranking with no line in the log)."""
    import logging
    import re

    from foundation import progress

    monkeypatch.setattr(progress, "on_tty", lambda: False)
    monkeypatch.setenv(progress.ENV_INTERVAL, "0")
    caplog.set_level(logging.INFO, logger=progress.log.name)
    rr = load_reranker(str(tiny_bert / "ce"), device="cpu")
    rr.score(["cats", "capital", "cats"], [TEXTS[1], TEXTS[2], TEXTS[0]], max_length=32, max_tokens=64, max_batch=1)
    load_embedder(str(tiny_bert / "enc"), device="cpu").encode(TEXTS, max_length=64, max_batch=1)
    lines = [r.getMessage() for r in caplog.records if r.name == progress.log.name]
    assert [ln.split(",")[0].split(" in ")[0] for ln in lines] == [
        "rerank: 1/3 pairs (33%)", "rerank: 2/3 pairs (66%)", "rerank: 3/3 pairs (100%)", "rerank: done 3/3 pairs",
        "encode: 1/3 texts (33%)", "encode: 2/3 texts (66%)", "encode: 3/3 texts (100%)", "encode: done 3/3 texts"]
    assert all(re.fullmatch(r"\w+: \d/3 \w+ \(\d+%\), [\d.,e+-]+/s, (~\d+s left|time left unknown)", ln)
               for ln in lines if "done" not in ln)
