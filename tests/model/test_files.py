"""Model directory integrity (model/files.py): every directory `write_model_dir` writes ends with
checksums.json; a load verifies it and names the file that differs; a cut config, tokenizer or
safetensors file is named; decoder-only configs are told from encoders."""

import json
import struct
from pathlib import Path

import pytest
import torch

import model
from model.files import (CHECKSUMS, ModelFileError, damaged_file, decoder_architecture, read_config,
                         verify_checksums)


@pytest.fixture
def tiny_dir(tmp_path) -> Path:
    torch.manual_seed(0)
    return model.save_pretrained(model.MGTEModel(model.MGTEConfig.tiny(vocab_size=1000)), tmp_path / "m")


def flip_tensor_bytes(path: Path, tensor: str) -> None:
    """Invert 4 bytes in the middle of ``tensor``'s data (the header stays valid)."""
    raw = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", raw[:8])
    start, end = json.loads(raw[8:8 + n])[tensor]["data_offsets"]
    at = 8 + n + (start + end) // 2
    raw[at:at + 4] = bytes(b ^ 0xFF for b in raw[at:at + 4])
    path.write_bytes(bytes(raw))


def test_checksums_list_every_file_and_are_written_last(tiny_dir):
    listing = json.loads((tiny_dir / CHECKSUMS).read_text())
    files = sorted(str(p.relative_to(tiny_dir)) for p in tiny_dir.rglob("*") if p.is_file() and p.name != CHECKSUMS)
    assert sorted(listing["sha256"]) == files and "model.safetensors" in files
    assert all(listing["size"][f] == (tiny_dir / f).stat().st_size for f in files)
    assert not list(tiny_dir.parent.glob("*.tmp"))  # the directory was renamed into place
    assert verify_checksums(tiny_dir) is True


def test_flipped_tensor_bytes_refused_naming_the_file_and_verify_false_loads(tiny_dir):
    flip_tensor_bytes(tiny_dir / "model.safetensors", "encoder.layer.0.attention.o_proj.weight")
    with pytest.raises(ModelFileError, match=r"m/model\.safetensors: sha256 differs from checksums\.json") as err:
        model.load_pretrained(tiny_dir, with_tokenizer=False)
    assert "\n" not in str(err.value)
    loaded = model.load_pretrained(tiny_dir, with_tokenizer=False, verify=False)  # verify_model: false
    assert isinstance(loaded, model.MGTEModel)


def test_a_verified_directory_is_hashed_once_until_a_file_changes(tiny_dir, monkeypatch):
    import model.files as files

    verify_checksums(tiny_dir)
    calls = []
    monkeypatch.setattr(files, "file_sha256", lambda p: calls.append(p) or "0")
    verify_checksums(tiny_dir)
    assert calls == []  # same files (size, mtime): no second hash in this process
    (tiny_dir / "config.json").write_text((tiny_dir / "config.json").read_text() + " ")
    with pytest.raises(ModelFileError, match="config.json: .* bytes"):
        verify_checksums(tiny_dir)


def test_truncated_safetensors_named_with_and_without_checksums(tiny_dir):
    weights = tiny_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(ModelFileError, match=r"model\.safetensors: \d+ bytes, \d+ when written"):
        model.load_pretrained(tiny_dir, with_tokenizer=False)
    (tiny_dir / CHECKSUMS).unlink()  # a third-party directory: no checksums, the load itself names it
    with pytest.raises(ModelFileError, match=r"model\.safetensors: unreadable safetensors file"):
        model.load_pretrained(tiny_dir, with_tokenizer=False)
    assert "model.safetensors: unreadable safetensors file" in damaged_file(tiny_dir)


def test_cut_config_named(tiny_dir):
    (tiny_dir / CHECKSUMS).unlink()
    config = tiny_dir / "config.json"
    config.write_text(config.read_text()[:40])
    with pytest.raises(ModelFileError, match=r"m/config\.json: unreadable or cut \(JSONDecodeError"):
        model.load_pretrained(tiny_dir, with_tokenizer=False)
    with pytest.raises(ModelFileError, match="config.json"):
        read_config(tiny_dir)


def test_cut_tokenizer_json_is_the_damaged_file(tmp_path):
    from model.tokenizer import bundled_xlmr_tokenizer_json

    (tmp_path / "tokenizer.json").write_bytes(Path(bundled_xlmr_tokenizer_json()).read_bytes()[:5000])
    assert damaged_file(tmp_path).startswith(f"{tmp_path / 'tokenizer.json'}: unreadable or cut")


def test_a_directory_without_checksums_loads_as_before(tiny_dir):
    (tiny_dir / CHECKSUMS).unlink()
    assert verify_checksums(tiny_dir) is False
    model.load_pretrained(tiny_dir, with_tokenizer=False)


def test_decoder_architectures_are_told_from_encoders():
    assert "GPT2LMHeadModel" in decoder_architecture({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]})
    assert decoder_architecture({"model_type": "llama"})
    assert decoder_architecture({"model_type": "bert", "is_decoder": True})
    assert decoder_architecture({"model_type": "custom", "architectures": ["CustomForCausalLM"]})
    for encoder in ({"model_type": "bert", "architectures": ["BertModel"]}, {"model_type": "xlm-roberta"},
                    {"model_type": "mgte"}, {"model_type": "new"}, {"model_type": "distilbert"}):
        assert decoder_architecture(encoder) is None, encoder
