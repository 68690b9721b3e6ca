"""What `init` accepts (training/model_builder.check_init, run by every model stage before any work):
an encoder (a GPT-2, decoder-only, directory is refused naming its architecture), `random` for random
weights (an empty init is refused saying so), and an mgte model whose files match its checksums.json
(`verify_model: false` skips the check). The models every trainer writes carry complete checksums."""

import json
from pathlib import Path

import pytest
import torch

from dags.cli import main
from foundation.errors import ConfigError, ModelLoadError
from model import MGTEConfig, MGTEModel
from model.files import CHECKSUMS, verify_checksums
from model.hf import save_pretrained
from training import reranker, trm
from training.model_builder import ModelConfig, check_init
from tests.model.test_files import flip_tensor_bytes
from tests.training.reranker.test_reranker import tiny_cfg as reranker_cfg, topic_rows
from tests.training.trm.test_trm import tiny_cfg as trm_cfg, write_table

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    path = tmp_path_factory.mktemp("gpt2") / "gpt2"
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100, n_positions=64)).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def mined(tmp_path_factory) -> Path:
    import pyarrow.parquet as pq

    from storage_schemas.mine import HARD_NEGATIVES

    path = tmp_path_factory.mktemp("mined") / "hard_negatives.parquet"
    pq.write_table(HARD_NEGATIVES.from_rows(topic_rows()), path)
    return path


def test_gpt2_init_refused_naming_its_architecture(gpt2_dir):
    with pytest.raises(ModelLoadError, match=r"init=.*gpt2: .* is a decoder-only model \(GPT2LMHeadModel "
                                             r"\(model_type gpt2\)\); init takes an encoder"):
        check_init(ModelConfig(), str(gpt2_dir))


def test_gpt2_init_refused_by_trm_before_any_output(tmp_path, gpt2_dir):
    cfg = trm_cfg(tmp_path, [write_table(tmp_path / "mined" / "part-0.parquet")], f"init={gpt2_dir}")
    with pytest.raises(ModelLoadError, match="GPT2LMHeadModel"):
        trm.run(cfg)
    assert not (tmp_path / "out").exists()


def test_gpt2_init_refused_by_reranker_cli_exit_2(tmp_path, gpt2_dir, mined, capsys):
    code = main(["train", "reranker", "--config", str(REPO / "dags/configs/reranker/tiny.yaml"), "--input",
                 str(mined), "--output", str(tmp_path / "out"), "--set", "engine=local", "--set", f"init={gpt2_dir}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "GPT2LMHeadModel" in err and f"init={gpt2_dir}" in err
    assert not (tmp_path / "out").exists()


def test_empty_init_refused_saying_write_random(tmp_path, mined, capsys):
    with pytest.raises(ConfigError, match="init is empty: write `init: random` for random weights"):
        check_init(ModelConfig(), "")
    code = main(["train", "reranker", "--config", str(REPO / "dags/configs/reranker/tiny.yaml"), "--input",
                 str(mined), "--output", str(tmp_path / "out"), "--set", "engine=local", "--set", "init="])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "init: random" in err and len(err.splitlines()) == 1


def test_init_random_trains(tmp_path, mined):
    manifest = reranker.run(reranker_cfg(tmp_path, [mined], "init=random", "loop.max_steps=1", "loop.ckpt_every=0"))
    assert manifest["extra"]["final"]["step"] == 1 and manifest["extra"]["init"] is None
    assert verify_checksums(tmp_path / "out" / "model")  # the saved reranker carries its checksums


def test_init_with_flipped_bytes_refused_unless_verify_model_false(tmp_path):
    torch.manual_seed(0)
    init = save_pretrained(MGTEModel(MGTEConfig.tiny(vocab_size=1000)), tmp_path / "init")
    flip_tensor_bytes(init / "model.safetensors", "encoder.layer.0.attention.o_proj.weight")
    with pytest.raises(ModelLoadError, match=r"init=.*init: .*init/model\.safetensors: sha256 differs"):
        check_init(ModelConfig(), str(init))
    assert check_init(ModelConfig(), str(init), verify=False) is None


def test_trm_directory_checksums_cover_the_sentence_transformers_files(tmp_path):
    from model.tokenizer import bundled_xlmr_tokenizer_json, load_tokenizer
    from training.trm.model import TRMEmbedder, save_trm

    tok = load_tokenizer(bundled_xlmr_tokenizer_json())
    encoder = MGTEModel(MGTEConfig.tiny())
    out = save_trm(TRMEmbedder(encoder, "cls", tok.all_special_ids), tmp_path / "trm", tokenizer=tok,
                   max_seq_length=64, dims=(32, 64))
    listed = json.loads((out / CHECKSUMS).read_text())["sha256"]
    assert {"trm.json", "modules.json", "1_Pooling/config.json", "sparse/modules.json",
            "sparse/1_SparseTerms/model.safetensors", "sparse/mgte_sparse_terms.py", "model.safetensors",
            "config.json"} <= set(listed)
    assert verify_checksums(out)
