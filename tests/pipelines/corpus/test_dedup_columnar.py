"""The local engine's columnar de-duplication gives exactly the decisions of the row-by-row
reference (:func:`dedup_in_memory`, which the Beam and Ray engines follow): planted exact and near
copies across files and builds, in shuffled order, with both MinHash implementations."""

import random

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipelines.corpus.config import DedupConfig
from pipelines.corpus.dedup import make_hasher, text_hash
from foundation.errors import MgteError
from pipelines.corpus.dedup_engines import DedupColumns, dedup_columnar, dedup_in_memory


def planted_rows(n: int, seed: int, cfg: DedupConfig) -> list[dict]:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(400)]
    originals = [" ".join(rng.choice(vocab) for _ in range(rng.randint(30, 120))) for _ in range(n)]
    texts = list(originals)
    for _ in range(n // 3):  # exact copies
        texts.append(rng.choice(originals))
    for _ in range(n // 2):  # near copies: a few words changed, some chained off other copies
        words = rng.choice(texts).split()
        for _ in range(rng.randint(1, 4)):
            words[rng.randrange(len(words))] = rng.choice(vocab)
        texts.append(" ".join(words))
    rng.shuffle(texts)
    hasher = make_hasher(cfg.minhash, cfg.bands * cfg.rows, cfg.seed)
    return [{"path": f"f{i % 3}.jsonl", "line": i // 3 + 1, "id": f"d{i}", "text_hash": text_hash(t),
             "minhash": hasher.signature_of(t, cfg.ngram).tolist(), "build": i % 2}
            for i, t in enumerate(texts)]


def canonical(decisions: list[dict]) -> list[tuple]:
    return sorted((d["build"], d["path"], d["line"], d["reason"], d["duplicate_of"], d["similarity"])
                  for d in decisions)


@pytest.mark.parametrize("minhash,exact", [("numpy", True), ("rensa", True), ("numpy", False)])
def test_columnar_equals_the_reference(minhash, exact):
    if minhash == "rensa":
        pytest.importorskip("rensa")
    cfg = DedupConfig(minhash=minhash, exact=exact)
    rows = planted_rows(240, seed=3, cfg=cfg)
    want = canonical(dedup_in_memory(rows, cfg))
    assert sum(d[3] == "near_duplicate" for d in want) >= 40 and sum(d[3] == "exact_duplicate" for d in want) >= 40 * exact
    table = pa.Table.from_pylist(rows)
    parts = [DedupColumns.of_table(table.filter(pc.equal(table["build"], b)), b, cfg) for b in (1, 0)]
    got = canonical(dedup_columnar(DedupColumns.concat(parts, cfg), cfg))
    assert got == want


def test_read_from_files_and_refuse_other_signature_widths(tmp_path):
    cfg = DedupConfig(minhash="numpy")
    rows = planted_rows(60, seed=5, cfg=cfg)
    files = []
    for build in (0, 1):
        part = [{k: v for k, v in r.items() if k != "build"} for r in rows if r["build"] == build]
        pq.write_table(pa.Table.from_pylist(part), tmp_path / f"b{build}.parquet")
        files.append((str(tmp_path / f"b{build}.parquet"), build))
    cols = DedupColumns.read(files, cfg)
    assert len(cols) == len(rows) and cols.sig.shape == (len(rows), 125)
    assert canonical(dedup_columnar(cols, cfg)) == canonical(dedup_in_memory(rows, cfg))
    assert dedup_columnar(DedupColumns.read([], cfg), cfg) == []
    short = [{k: v for k, v in r.items() if k != "build"} for r in rows]
    short[4]["minhash"] = short[4]["minhash"][:100]
    pq.write_table(pa.Table.from_pylist(short), tmp_path / "old.parquet")
    with pytest.raises(MgteError, match=r"old.parquet: record 5 \(field minhash\) has 100 MinHash values.*= 125"):
        DedupColumns.read([(str(tmp_path / "old.parquet"), 0)], cfg)
