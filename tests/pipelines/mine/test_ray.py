"""Encoding on a Ray Data actor pool (engine=ray, local Ray, 2 CPUs) gives the same table as the
in-process path, with a tiny random BERT encoder (a real Hugging Face model directory)."""

import pytest

from pipelines import mine
from tests.pipelines.mine.conftest import config, read_rows, topic_pairs, write_jsonl


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from pipelines.embedding import resolve_model_dir

    tok = AutoTokenizer.from_pretrained(str(resolve_model_dir("all-MiniLM-L6-v2")))
    root = tmp_path_factory.mktemp("enc")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(root)
    tok.save_pretrained(root)
    return str(root)


@pytest.mark.slow
def test_ray_actor_pool_encoding_equals_local(tmp_path, tiny_encoder, local_ray):
    src = write_jsonl(tmp_path / "pairs.jsonl", topic_pairs(4))
    sets = ["encode.shard_size=16", "encode.device=cpu", "encode.doc_max_length=32", "encode.query_max_length=32"]
    local = mine.run(config(tmp_path, [src], *sets, out="local", model=tiny_encoder, cache_dir=str(tmp_path / "c1")))
    ray_run = mine.run(config(tmp_path, [src], *sets, "engine=ray", "ray.num_cpus=2", "encode.actors=2",
                              out="ray", model=tiny_encoder, cache_dir=str(tmp_path / "c2")))
    assert ray_run["extra"]["engine"] == "ray" and ray_run["extra"]["encoded_shards"] == local["extra"]["encoded_shards"]
    assert ray_run["counts"] == local["counts"] and local["counts"]["kept"] > 0
    assert read_rows(tmp_path / "ray") == read_rows(tmp_path / "local")
