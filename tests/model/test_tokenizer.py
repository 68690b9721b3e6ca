import logging

import pytest

from model.tokenizer import XLMR_TOKENIZER, bundled_xlmr_tokenizer_json, load_tokenizer


@pytest.fixture(scope="module")
def xlmr():
    return load_tokenizer(bundled_xlmr_tokenizer_json())


def test_bundled_tokenizer_is_the_xlmr_unigram_vocabulary(xlmr):
    assert len(xlmr) == 250_002
    assert (xlmr.cls_token_id, xlmr.pad_token_id, xlmr.sep_token_id, xlmr.unk_token_id) == (0, 1, 2, 3)
    assert xlmr.mask_token_id == 250_001
    assert xlmr("Hello world")["input_ids"] == [0, 35378, 8999, 2]
    assert xlmr.model_max_length == 8192


def test_hub_name_offline_falls_back_to_bundled_copy_and_says_so(caplog, xlmr):
    with caplog.at_level(logging.WARNING, logger="model.tokenizer"):
        tok = load_tokenizer(XLMR_TOKENIZER, local_files_only=True)
    assert "bundled" in caplog.text and XLMR_TOKENIZER in caplog.text
    text = "Grüße aus Köln — 東京から、こんにちは"
    assert tok(text)["input_ids"] == xlmr(text)["input_ids"]


def test_directory_and_json_path(tmp_path, xlmr):
    xlmr.save_pretrained(str(tmp_path))
    from_dir = load_tokenizer(tmp_path)
    from_json = load_tokenizer(tmp_path / "tokenizer.json")
    for tok in (from_dir, from_json):
        assert tok("multilingual retrieval")["input_ids"] == xlmr("multilingual retrieval")["input_ids"]


def test_other_names_do_not_fall_back(tmp_path):
    with pytest.raises(OSError):
        load_tokenizer("no-such-org/no-such-tokenizer", local_files_only=True)
    (tmp_path / "vocab.txt").write_text("a\n")
    with pytest.raises(ValueError, match="tokenizer.json"):
        load_tokenizer(tmp_path / "vocab.txt")


def test_the_rust_backend_tokenizes_as_transformers_and_a_corpus_worker_imports_no_torch(monkeypatch, tmp_path, xlmr):
    """``backend_tokenizer`` (what the corpus and pairs stages count tokens with) gives the ids of
    the transformers tokenizer on multilingual text, by hub name (offline: the bundled copy), model
    directory and tokenizer.json; the corpus token counter loads it without importing torch."""
    import subprocess
    import sys

    from model.tokenizer import backend_tokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    texts = ["Grüße aus Köln — 東京から、こんにちは", "Привет, мир! ¿Qué tal?", "नमस्ते दुनिया", "  spaced\tout\n text "]
    xlmr.save_pretrained(str(tmp_path))
    want = [xlmr(t, add_special_tokens=False)["input_ids"] for t in texts]
    for source in (XLMR_TOKENIZER, tmp_path, tmp_path / "tokenizer.json"):
        tok = backend_tokenizer(source)
        assert [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)] == want, source
    counts = [len(ids) for ids in want]
    code = ("import sys; from pipelines.corpus.steps import _token_counter; "
            f"n = _token_counter({XLMR_TOKENIZER!r})({texts!r}); "
            f"assert n == {counts!r}, n; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"
