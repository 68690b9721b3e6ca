"""Raw pairs become rows in one place: ``read_raw_pairs`` (what CPT and eval read raw files with)
keeps exactly the rows the stage keeps with the same config, with the same counts and reasons."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from foundation.config import load_config
from foundation.errors import MgteError
from pipelines import pairs
from .conftest import BEAM, DE_BODY, EN_BODY, config, small_inputs, write_jsonl


def messy_inputs(tmp_path):
    """The small inputs plus a file of bad records: each kind of quarantine and drop once."""
    files = small_inputs(tmp_path)
    files.append(write_jsonl(tmp_path / "in" / "mess.jsonl", [
        {"id": "m-mismatch", "query": "A fox story", "positive": DE_BODY, "lang": "en"},
        {"id": "m-not-in-set", "query": "A fox story", "positive": EN_BODY, "lang": "xh"},
        {"id": "m-same", "query": "same", "positive": " Same "},
        {"id": "m-empty", "query": "", "positive": "x"},
        {"query": "Title number 2", "positive": f"{EN_BODY} Item 2."},  # tb2's pair: mess.jsonl sorts first, survives
        {"id": "m-int-lang", "query": "ok", "positive": "fine", "lang": 7},
        {"id": "m-list-lang", "query": "ok", "positive": "fine", "lang": ["en"]},  # quarantined
        {"id": "m-long", "query": "x" * 500, "positive": "y"},
        {"id": "m-ok", "query": "Was ist Regen?", "positive": "Wasser, das aus Wolken fällt.", "lang": "de"},
    ], extra_lines=["{bad", "[1]"]))
    return files


def stage_and_raw(tmp_path, cfg):
    manifest = pairs.run(cfg)
    return pairs.read_pairs(cfg.output), manifest, pairs.read_raw_pairs([str(p) for p in cfg.input], cfg)


def assert_same(stage_tables, manifest, raw):
    tables, info = raw
    assert sorted(tables) == sorted(stage_tables)
    for source, table in stage_tables.items():
        assert tables[source].equals(table), source  # row for row, every column, same order
    assert info["counts"] == manifest["counts"]
    assert info["dropped_by_reason"] == manifest["dropped_by_reason"]


def test_raw_reader_keeps_what_the_stage_keeps_with_the_raw_config(tmp_path):
    """CPT's default: no tokenizer, no language identification (raw_config) on both paths."""
    inputs = messy_inputs(tmp_path)
    cfg = load_config(pairs.Config, None, ["tokenizer=null", "lang.identify=false", *BEAM, "reader.error_budget=0.5"],
                      data={"input": [str(p) for p in inputs], "output": str(tmp_path / "out")})
    stage_tables, manifest, _ = stage_and_raw(tmp_path, cfg)
    raw = pairs.read_raw_pairs([str(p) for p in inputs])  # the default config, as CPT calls it
    assert_same(stage_tables, manifest, raw)
    assert manifest["counts"] == {"input": 29, "kept": 17, "dropped": 8, "quarantined": 4}
    assert manifest["dropped_by_reason"] == {
        "empty_positive": 1, "empty_query": 1, "exact_duplicate": 3, "identical_query_positive": 1,
        "lang_not_in_set": 2}  # `xh` and the int code 7
    langs = dict(zip(raw[0]["mess"].column("pair_id").to_pylist(), raw[0]["mess"].column("lang").to_pylist()))
    assert langs == {"m-mismatch": "en", "mess.jsonl:5": "und", "m-long": "und", "m-ok": "de"}


def test_raw_reader_with_the_stage_config_keeps_what_the_stage_keeps(tmp_path):
    """With a tokenizer and the identifier, the token-length and language drops agree too."""
    cfg = config(tmp_path, messy_inputs(tmp_path), "reader.error_budget=0.5", "limits.query_max_tokens=8",
                 "limits.drop_query_tokens=64")
    stage_tables, manifest, raw = stage_and_raw(tmp_path, cfg)
    assert_same(stage_tables, manifest, raw)
    assert {"lang_mismatch", "over_long_query", "lang_not_in_set"} <= set(manifest["dropped_by_reason"])


def test_load_pair_inputs_refuses_a_mix_and_reads_either_kind(tmp_path):
    inputs = small_inputs(tmp_path)
    cfg = load_config(pairs.Config, None, ["tokenizer=null", "lang.identify=false", *BEAM, "reader.error_budget=0.2"],
                      data={"input": [str(p) for p in inputs], "output": str(tmp_path / "out")})
    pairs.run(cfg)
    from_stage, info = pairs.load_pair_inputs([cfg.output], who="t")
    from_raw, raw_info = pairs.load_pair_inputs([str(p) for p in inputs], who="t")
    assert {s: t.num_rows for s, t in from_stage.items()} == {"qa": 2, "title_body": 7, "translation": 5}
    assert all(from_raw[s].equals(t) for s, t in from_stage.items()) and info == raw_info
    with pytest.raises(MgteError, match="mixes"):
        pairs.load_pair_inputs([cfg.output, str(inputs[0])], who="t")
    with pytest.raises(MgteError, match="no input"):
        pairs.load_pair_inputs([], who="t")


def test_a_parquet_raw_file_without_the_query_column_is_refused(tmp_path):
    path = tmp_path / "wrong.parquet"
    pq.write_table(pa.table({"title": ["x"], "positive": ["y"]}), path)
    with pytest.raises(Exception, match=r"wrong\.parquet.*'query'"):
        pairs.read_raw_pairs([str(path)])
