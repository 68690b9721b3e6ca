"""Shared helpers of the `mgte pairs` tests: configs, small input files, pair dicts."""

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from foundation.config import load_config
from pipelines import pairs

REPO = Path(__file__).resolve().parents[3]
# Beam's DirectRunner first tries to download the Prism runner binary; the in-process FnApiRunner
# (what DirectRunner falls back to) never touches the network.
BEAM = ["beam.options=--runner=FnApiRunner"]

EN_BODY = "The quick brown fox jumps over the lazy dog while the farmer watches from the old wooden fence."
DE_BODY = "Der schnelle braune Fuchs springt über den faulen Hund, während der Bauer vom alten Holzzaun zusieht."


def xlmr_tokenizer() -> str:
    import semantra_multilingual

    path = Path(semantra_multilingual.__file__).parent / "assets/multilingual-e5-small/tokenizer.json"
    assert path.is_file(), path
    return str(path)


def config(tmp_path, inputs, *sets, **kw):
    return load_config(pairs.Config, None, [f"tokenizer={xlmr_tokenizer()}", *BEAM, *sets],
                       data={"input": [str(p) for p in inputs], "output": str(tmp_path / "out"), **kw})


def write_jsonl(path: Path, rows, extra_lines=()):
    lines = [json.dumps(r, ensure_ascii=False) for r in rows] + list(extra_lines)
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def pair(pid, query, positive, lang=None, source="s", line=1):
    return {"pair_id": pid, "query": query, "positive": positive, "source": source, "lang": lang,
            "path": "/in/x.jsonl", "line": line}


def small_inputs(tmp_path: Path) -> list[Path]:
    d = tmp_path / "in"
    d.mkdir()
    a = write_jsonl(d / "title_body.jsonl", [
        {"id": f"tb{i}", "query": f"Title number {i}", "positive": f"{EN_BODY} Item {i}.", "lang": "en"}
        for i in range(7)
    ] + [{"id": "tb-dup", "query": "Title number 0", "positive": f"{EN_BODY} Item 0.", "lang": "en"},
         {"id": "tb-empty", "query": "Empty", "positive": "  "}], extra_lines=["{broken"])
    b = write_jsonl(d / "translation.jsonl.gz", [
        {"id": f"tr{i}", "query": f"{EN_BODY} ({i})", "positive": f"{DE_BODY} ({i})", "lang": "en-de",
         "source": "translation"} for i in range(5)
    ] + [{"id": "tr-dup-of-tb", "query": "Title number 1", "positive": f"{EN_BODY} Item 1.", "source": "translation"}])
    c = d / "qa.parquet"
    pq.write_table(pa.table({"query": ["Why is the sky blue?", "What is rain?"],
                             "positive": ["Rayleigh scattering of sunlight by the air.", "Water falling from clouds."],
                             "source": ["qa", "qa"]}), c)
    return [a, b, c]


def read_data(out: Path) -> dict[str, list[str]]:
    return {s: sorted(t.column("pair_id").to_pylist()) for s, t in pairs.read_pairs(out).items()}


def outcome(out: Path) -> dict:
    """Everything a pairs output says: counts, reasons, and every table's rows (sorted), by kind."""
    manifest = json.loads((out / "manifest.json").read_text())
    tables = {kind: sorted((pq.read_table(out / f).to_pylist() for f in files), key=repr)
              for kind, files in manifest["outputs"].items()}
    tables = {kind: sorted((r for t in rows for r in t), key=lambda r: json.dumps(r, sort_keys=True, default=str))
              for kind, rows in tables.items()}
    return {"counts": manifest["counts"], "dropped_by_reason": manifest["dropped_by_reason"],
            "data_files": sorted(manifest["outputs"]["data"]), **tables}
