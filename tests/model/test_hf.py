import json
import os
import re
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from model import (
    MGTEConfig,
    MGTEForEmbedding,
    MGTEForMaskedLM,
    MGTEForSequenceClassification,
    MGTEModel,
    load_pretrained,
    save_pretrained,
)
from model.hf import SOURCE_FILES
from model.tokenizer import bundled_xlmr_tokenizer_json, load_tokenizer

TEXTS = ["Retrieval in many languages.", "Bonjour tout le monde, ceci est un texte un peu plus long.", "短い"]


@pytest.fixture(scope="module")
def saved_mlm(tmp_path_factory):
    """A tiny MLM model with the real XLM-R vocabulary, saved with its tokenizer."""
    torch.manual_seed(0)
    config = MGTEConfig.tiny(rope_theta=160_000.0)
    m = MGTEForMaskedLM(config).eval()
    tokenizer = load_tokenizer(bundled_xlmr_tokenizer_json())
    directory = save_pretrained(m, tmp_path_factory.mktemp("ckpt") / "model", tokenizer=tokenizer)
    return m, tokenizer, directory


def test_directory_layout(saved_mlm):
    _, _, directory = saved_mlm
    names = set(os.listdir(directory))
    assert {"config.json", "model.safetensors", "tokenizer.json", "config.py", "encoder.py", "modeling.py"} <= names
    for source in SOURCE_FILES:  # every module a shipped source imports relatively is shipped too
        for imported in re.findall(r"^from \.(\w+) import", (directory / source).read_text(), flags=re.M):
            assert f"{imported}.py" in names, f"{source} imports .{imported}, which save_pretrained does not copy"
    config = json.loads((directory / "config.json").read_text())
    assert config["model_type"] == "mgte"
    assert config["auto_map"]["AutoModel"] == "encoder.MGTEModel"
    assert set(config["auto_map"]) >= {"AutoConfig", "AutoModelForMaskedLM", "AutoModelForSequenceClassification"}
    assert config["rope_theta"] == 160_000.0
    assert not (directory.parent / "model.tmp").exists()


def test_automodel_round_trip_offline_in_a_fresh_process(saved_mlm, tmp_path):
    m, tokenizer, directory = saved_mlm
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected_hidden = m.new(batch["input_ids"], batch["attention_mask"]).last_hidden_state
        expected_logits = m(batch["input_ids"], batch["attention_mask"]).logits
    out = tmp_path / "out.pt"
    code = f"""
import sys
sys.modules["model"] = None  # the saved directory must be self-contained
import torch
from transformers import AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer
d = {str(directory)!r}
tok = AutoTokenizer.from_pretrained(d)
batch = tok({TEXTS!r}, padding=True, return_tensors="pt")
enc = AutoModel.from_pretrained(d, trust_remote_code=True).eval()
mlm = AutoModelForMaskedLM.from_pretrained(d, trust_remote_code=True).eval()
rr = AutoModelForSequenceClassification.from_pretrained(d, trust_remote_code=True, num_labels=1).eval()
with torch.no_grad():
    hidden = enc(**batch).last_hidden_state
    logits = mlm(**batch).logits
    scores = rr(**batch).logits
torch.save(dict(ids=batch["input_ids"], hidden=hidden, logits=logits, scores=scores, cls=type(enc).__name__), {str(out)!r})
"""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    got = torch.load(out)
    assert got["cls"] == "MGTEModel"
    assert torch.equal(got["ids"], batch["input_ids"])
    torch.testing.assert_close(got["hidden"], expected_hidden, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got["logits"], expected_logits, atol=1e-4, rtol=1e-5)
    assert got["scores"].shape == (len(TEXTS), 1)


def test_load_pretrained_into_each_class(saved_mlm, caplog):
    m, tokenizer, directory = saved_mlm
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    mlm = load_pretrained(directory, MGTEForMaskedLM).eval()
    encoder = load_pretrained(directory, MGTEModel).eval()
    reranker = load_pretrained(directory, MGTEForSequenceClassification).eval()
    assert "classifier.weight" in caplog.text  # freshly initialised head, logged
    assert mlm.tokenizer is not None and len(mlm.tokenizer) == 250_002
    with torch.no_grad():
        ref = m(**batch).logits
        torch.testing.assert_close(mlm(**batch).logits, ref, atol=0, rtol=0)
        hidden = encoder(**batch).last_hidden_state
        torch.testing.assert_close(hidden, m.new(**batch).last_hidden_state, atol=0, rtol=0)
        torch.testing.assert_close(reranker.new(**batch).last_hidden_state, hidden, atol=0, rtol=0)
    # an encoder-only directory loads under a head model too (prefix added)
    again = save_pretrained(encoder, directory.parent / "encoder")
    emb = load_pretrained(again, MGTEForEmbedding)
    torch.testing.assert_close(emb.new.embeddings.word_embeddings.weight, encoder.embeddings.word_embeddings.weight)


def test_missing_encoder_weights_is_an_error(saved_mlm, tmp_path):
    m, _, _ = saved_mlm
    directory = save_pretrained(m, tmp_path / "broken")
    from safetensors.torch import load_file

    state = load_file(str(directory / "model.safetensors"))
    del state["new.encoder.layer.1.mlp_ln.weight"]
    save_file(state, str(directory / "model.safetensors"))
    with pytest.raises(ValueError, match="broken/model.safetensors: .* when written"):  # checksums.json
        load_pretrained(directory, MGTEForMaskedLM)
    with pytest.raises(ValueError, match="encoder.layer.1.mlp_ln.weight"):
        load_pretrained(directory, MGTEForMaskedLM, verify=False)


def test_save_refuses_to_replace_a_non_model_directory(saved_mlm, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "precious.txt").write_text("x")
    with pytest.raises(FileExistsError):
        save_pretrained(saved_mlm[0], tmp_path / "data")


def _released_config(**extra):
    return {
        "model_type": "new",
        "vocab_size": 1024, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 128, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.0, "layer_norm_eps": 1e-12, "type_vocab_size": 1, "pad_token_id": 1,
        "max_position_embeddings": 8192, "position_embedding_type": "rope", "rope_theta": 20000,
        "rope_scaling": {"type": "ntk", "factor": 8.0}, "layer_norm_type": "layer_norm", "pack_qkv": True,
        "unpad_inputs": True, "use_memory_efficient_attention": True, "logn_attention_scale": False,
        "auto_map": {"AutoModel": "Alibaba-NLP/new-impl--modeling.NewModel"},
        **extra,
    }


@pytest.mark.parametrize("architecture", ["NewForTokenClassification", "NewForSequenceClassification", "NewForMaskedLM"])
def test_released_gte_multilingual_checkpoint_loads(tmp_path, ragged_batch, architecture):
    """A checkpoint in the released layout (names and config of gte-multilingual-base/-reranker-base)."""
    ours_config = MGTEConfig.tiny(vocab_size=1024, rope_theta=20000.0, rope_scaling={"type": "ntk", "factor": 8.0}, num_labels=1)
    cls = {"NewForTokenClassification": MGTEForEmbedding, "NewForMaskedLM": MGTEForMaskedLM}.get(architecture)
    if cls is None:
        ours_config.classifier_pooler = True
        cls = MGTEForSequenceClassification
    torch.manual_seed(0)
    reference = cls(ours_config).eval()
    state = dict(reference.state_dict())
    if architecture == "NewForMaskedLM":  # released names: a tied decoder weight and its bias
        state["lm_head.decoder.bias"] = state.pop("lm_head.bias")
        state["lm_head.decoder.weight"] = state["new.embeddings.word_embeddings.weight"].clone()
    else:
        assert len([k for k in state if k.startswith("new.") and ".pooler." not in k]) == 4 + 11 * 2
    (tmp_path / "config.json").write_text(json.dumps(_released_config(architectures=[architecture], num_labels=1)))
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))

    loaded = load_pretrained(tmp_path, cls).eval()
    assert loaded.config.rope_scaling == {"type": "ntk", "factor": 8.0} and loaded.config.rope_theta == 20000.0
    with torch.no_grad():
        got, want = loaded(*ragged_batch), reference(*ragged_batch)
    key = {"NewForTokenClassification": "dense", "NewForSequenceClassification": "logits", "NewForMaskedLM": "logits"}
    torch.testing.assert_close(got[key[architecture]], want[key[architecture]], atol=0, rtol=0)
    bare = load_pretrained(tmp_path, MGTEModel).eval()
    with torch.no_grad():
        torch.testing.assert_close(bare(*ragged_batch).last_hidden_state, reference.new(*ragged_batch).last_hidden_state)


def test_released_config_with_unsupported_options_is_rejected(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(_released_config(logn_attention_scale=True)))
    save_file({"x": torch.zeros(1)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="logn_attention_scale"):
        load_pretrained(tmp_path)
