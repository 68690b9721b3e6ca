"""One model config and builder for every train stage: random preset, or init + forced RoPE/dropout."""

import json

import pytest
import torch

from foundation.errors import BadInputError, ConfigError, ModelLoadError
from model import MGTEConfig, MGTEForMaskedLM, MGTEForSequenceClassification, MGTEModel
from model.hf import save_pretrained
from training.model_builder import ModelConfig, build_encoder, save_model

SMALL = {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64, "vocab_size": 1000}


def test_random_init_takes_preset_overrides_theta_and_dropout():
    m = build_encoder(ModelConfig(preset="tiny", rope_theta=160_000.0, hidden_dropout_prob=0.0, overrides=SMALL), None)
    assert isinstance(m, MGTEModel) and m.config.hidden_size == 32
    assert m.config.rope_theta == 160_000.0 and m.rotary.theta == 160_000.0
    assert all(d.p == 0.0 for d in m.modules() if isinstance(d, torch.nn.Dropout))
    assert build_encoder(ModelConfig(preset="tiny", overrides=SMALL), None).config.rope_theta == 10_000.0


def test_init_keeps_weights_and_forces_theta_and_dropout_into_the_saved_config(tmp_path):
    torch.manual_seed(0)
    src = MGTEModel(MGTEConfig.tiny(**SMALL))
    save_pretrained(src, tmp_path / "enc")
    same = build_encoder(ModelConfig(), str(tmp_path / "enc"), with_tokenizer=False)
    assert same.config.rope_theta == src.config.rope_theta  # null: the init model's own base
    mlm = build_encoder(ModelConfig(rope_theta=160_000.0, hidden_dropout_prob=0.05), str(tmp_path / "enc"),
                        MGTEForMaskedLM, with_tokenizer=False)
    for name, value in src.state_dict().items():
        assert torch.equal(mlm.new.state_dict()[name], value), name
    assert mlm.new.rotary.theta == 160_000.0
    save_pretrained(mlm, tmp_path / "mlm")
    saved = json.loads((tmp_path / "mlm" / "config.json").read_text())
    assert saved["rope_theta"] == 160_000.0 and saved["hidden_dropout_prob"] == 0.05
    off = build_encoder(ModelConfig(fused_layers="off"), str(tmp_path / "enc"), with_tokenizer=False)
    assert off.config.fused_layers == "off" and same.config.fused_layers == "auto"


def test_fused_layers_setting_reaches_a_random_init_and_is_checked():
    assert build_encoder(ModelConfig(preset="tiny", fused_layers="off", overrides=SMALL), None).config.fused_layers == "off"
    with pytest.raises(ValueError, match="model.fused_layers must be one of"):
        ModelConfig(fused_layers="yes").validate()


def test_unloadable_init_is_one_line_bad_input(tmp_path):
    (tmp_path / "xlmr").mkdir()
    (tmp_path / "xlmr" / "config.json").write_text('{"model_type": "xlm-roberta"}')  # no weights
    with pytest.raises(BadInputError, match="init=.*xlmr: cannot be loaded as a Hugging Face encoder"):
        build_encoder(ModelConfig(), str(tmp_path / "xlmr"))
    with pytest.raises(ModelLoadError, match="init=.*nowhere"):  # a missing reference is a refusal: exit 2
        build_encoder(ModelConfig(), str(tmp_path / "nowhere"))


@pytest.fixture
def bert_dir(tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32, max_position_embeddings=16)).save_pretrained(tmp_path / "bert")
    return tmp_path / "bert"


def test_hf_init_refuses_a_rope_base_naming_the_key(bert_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="model.rope_theta=10000: init=.*'bert' model .* set model.rope_theta: null"):
        build_encoder(ModelConfig(rope_theta=10_000.0), str(bert_dir))
    with pytest.raises(BadInputError, match="cannot start a MGTEForSequenceClassification"):
        build_encoder(ModelConfig(), str(bert_dir), MGTEForSequenceClassification)


def test_hf_init_dropout_override_reaches_every_dropout_and_the_saved_config(bert_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = build_encoder(ModelConfig(hidden_dropout_prob=0.0), str(bert_dir), MGTEForMaskedLM)
    assert type(model.hf).__name__ == "BertForMaskedLM" and model.max_tokens == 16
    assert all(d.p == 0.0 for d in model.modules() if isinstance(d, torch.nn.Dropout))
    model.train()  # dropout 0: training mode gives the eval output
    ids, cu = torch.tensor([5, 6, 7, 8, 9]), torch.tensor([0, 2, 5], dtype=torch.int32)
    torch.testing.assert_close(model(ids, cu, 3), model.eval()(ids, cu, 3))
    save_model(model, tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["hidden_dropout_prob"] == 0.0 and saved["attention_probs_dropout_prob"] == 0.0
    assert saved["architectures"] == ["BertForMaskedLM"] and "auto_map" not in saved
