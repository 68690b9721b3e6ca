"""Loading a model for eval or mining (pipelines/embedding): an mgte-written model whose files differ
from its checksums.json is refused naming the file (`verify=False` / `verify_model: false` loads it);
a cut config.json, tokenizer.json or model.safetensors is one ModelLoadError naming the file, and
`mgte eval` exits 2 with it before any work."""

import shutil
from pathlib import Path

import pytest

from dags.cli import main
from foundation.errors import ModelLoadError
from model.files import CHECKSUMS
from pipelines.embedding import load_embedder, load_reranker
from tests.model.test_files import flip_tensor_bytes

REPO = Path(__file__).resolve().parents[3]
TINY = REPO / "dags/configs/eval/tiny.yaml"


@pytest.fixture
def trm_copy(tiny_models, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_models["trm"], tmp_path / "trm"))


def test_flipped_bytes_refused_naming_the_file_and_verify_false_loads(trm_copy):
    flip_tensor_bytes(trm_copy / "model.safetensors", "new.encoder.layer.1.mlp.down_proj.weight")
    with pytest.raises(ModelLoadError, match=r"^model .*trm: .*trm/model\.safetensors: sha256 differs") as err:
        load_embedder(str(trm_copy), device="cpu")
    assert "\n" not in str(err.value)
    assert load_embedder(str(trm_copy), device="cpu", verify=False).dim == 64


def test_reranker_with_a_changed_file_refused(tiny_models, tmp_path):
    rr = Path(shutil.copytree(tiny_models["reranker"], tmp_path / "rr"))
    (rr / "tokenizer_config.json").write_text((rr / "tokenizer_config.json").read_text().replace("}", ' }', 1))
    with pytest.raises(ModelLoadError, match=r"^reranker .*rr: .*rr/tokenizer_config\.json: \d+ bytes, \d+ when"):
        load_reranker(str(rr), device="cpu")


def test_cut_files_of_a_third_party_model_named(tiny_bert, tmp_path):
    for name in ("tokenizer.json", "model.safetensors", "config.json"):
        enc = Path(shutil.copytree(tiny_bert / "enc", tmp_path / name))
        assert not (enc / CHECKSUMS).exists()
        data = (enc / name).read_bytes()
        (enc / name).write_bytes(data[:len(data) // 2])
        with pytest.raises(ModelLoadError, match=rf"{enc / name}: unreadable") as err:
            load_embedder(str(enc), device="cpu")
        assert "\n" not in str(err.value)


def test_eval_with_a_cut_config_exits_2_before_any_work(trm_copy, small_beir, tmp_path, capsys):
    config = trm_copy / "config.json"
    config.write_text(config.read_text()[:100])
    out = tmp_path / "out"
    code = main(["eval", "--config", str(TINY), "--input", str(small_beir), "--output", str(out),
                 "--set", f"model={trm_copy}", "--set", f"cache_dir={tmp_path / 'cache'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert f"model={trm_copy}: {config}: unreadable or cut" in err
    assert not out.exists()
