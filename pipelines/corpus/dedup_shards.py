"""The de-duplication pieces every engine shares: the row-level stages (one text-hash group, one
record's band keys, one LSH bucket) and, for the dedup through files
(:mod:`pipelines.corpus.dedup_rounds`), the slices, the shard writer and the Arrow tables its
steps hand on."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from foundation.ledger import StageOutput
from pipelines.corpus.config import DedupConfig
from pipelines.corpus.dedup import Decision, band_keys, bucket_links, exact_group_decisions
from pipelines.corpus.steps import write_decision_shard


def row_key(row: dict) -> tuple[int, str, int, str]:
    return (int(row.get("build") or 0), row["path"], int(row["line"]), row["id"])


def exact_stage(rows: Iterable[dict]) -> tuple[list[dict], list[dict]]:
    """One text-hash group -> (survivor rows, exact-duplicate decision rows)."""
    rows = list(rows)
    by_key = {row_key(r): r for r in rows}
    survivor, decisions = exact_group_decisions(by_key)
    return [by_key[survivor]], [d.row() for d in decisions]


def band_items(row: dict, cfg: DedupConfig) -> list[tuple[str, tuple]]:
    sig = np.asarray(row["minhash"], dtype=np.uint32)
    if sig.size == 0:
        return []
    return [(k, (row_key(row), sig)) for k in band_keys(sig, cfg.bands, cfg.rows)]


def bucket_stage(members: Iterable[tuple], threshold: float) -> list[tuple]:
    members = list(members)
    return bucket_links(members, threshold) if len(members) > 1 else []



# ---- through files: clusters without a global gather -----------------------------------------
# No engine brings the links or the decisions to one process: the links' connected components are
# found with the rounds of :mod:`pipelines.corpus.components`, and one task per partition of the
# shards (records hashed by input path) joins its records' edges to their cluster's
# representative with their link similarities and writes the shards' decisions. The driver gets
# counts: candidates, links, nodes not yet in a star, and the decisions from the files' footers.
MAX_SHARDS = 256
KEY_FIELDS = (("build", "int64"), ("path", "string"), ("line", "int64"), ("id", "string"))


# ---- slices: the near dedup's shuffles cut to a configured size --------------------------------
def candidate_count(files: list[tuple[str, int]]) -> int:
    """The candidates of ``(file, build)`` pairs, from the parquet footers (no rows read)."""
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(f).num_rows for f, _ in files)


def slice_count(candidates: int, cfg: DedupConfig) -> int:
    """Slices of the dedup's shuffles: ``ceil(candidates x bands / shuffle_items)`` (one band item per
    candidate and band), so that one slice's shuffle holds at most ``dedup.shuffle_items`` items."""
    items = candidates * (cfg.bands if cfg.near else 1)
    return max(1, -(-items // cfg.shuffle_items))


def _mix(values: np.ndarray) -> np.ndarray:
    """uint32 values -> well-spread uint64 (a multiplicative hash), for slicing."""
    return (values.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(40)


def text_slices(hashes: list[str], slices: int) -> tuple[np.ndarray, np.ndarray]:
    """Text hashes -> (their crc32 codes, their exact slices: code % ``slices``)."""
    import zlib

    codes = np.fromiter((zlib.crc32(h.encode()) for h in hashes), np.int64, len(hashes))
    return codes, codes % slices


def bucket_hashes(block: np.ndarray) -> np.ndarray:
    """``(n, rows)`` uint32 band values -> the xxh64 of each row's bytes: the hash that
    :func:`pipelines.corpus.dedup.band_key` names a bucket by (with its band)."""
    import xxhash

    width = 4 * block.shape[1]
    data = np.ascontiguousarray(block, dtype=np.uint32).tobytes()
    return np.fromiter((xxhash.xxh64_intdigest(data[i:i + width]) for i in range(0, len(data), width)),
                       np.uint64, block.shape[0])


def band_slices(sig: np.ndarray, cfg: DedupConfig, slices: int) -> np.ndarray:
    """``(n, bands x rows)`` signatures -> the ``(n, bands)`` slice of each (candidate, band) item, by
    the band's first value: every member of a bucket lies in the same slice."""
    return (_mix(sig[:, ::cfg.rows][:, :cfg.bands]) % np.uint64(slices)).astype(np.int64)


# ---- the slice pass: every candidates file read once, its items written per slice ---------------
# Each slice's task (:func:`pipelines.corpus.dedup_rounds.slice_task`) then reads only its own items: the
# reading is linear in the input whatever the number of slices (it was slices x input when each
# slice picked its items out of every candidates file). A pass task writes one file per kind, its
# items sorted by slice, a row group per slice (its footer names each row group's slice): the files
# grow as the blocks, not as blocks x slices (625 files at 1M documents, 2.5 billion at 2B).
SLICE_DIR = "_work/dedup_slices"  # the slice pass's files, removed when the dedup task is marked
SLICES_KEY = b"mgte_slices"  # footer metadata of a pass file: the slice of each row group, in order
ROW_GROUP_ROWS = 1 << 20  # a slice's items in one block past this are split into more row groups
EXACT_ITEMS = (("text_hash", "string"), ("code", "int64"), ("build", "int64"), ("path", "string"),
               ("line", "int64"), ("id", "string"))
BAND_ITEMS = (("band", "int32"), ("bucket", "uint64"), ("file", "int32"), ("row", "int32"))


def file_blocks(files: list[tuple[str, int]], cfg: DedupConfig) -> list[list[int]]:
    """Runs of consecutive candidates files of at most ``shuffle_items / bands`` candidates each (one
    file at least): the slice pass's tasks, each holding at most ``shuffle_items`` band items."""
    import pyarrow.parquet as pq

    limit = max(1, cfg.shuffle_items // (cfg.bands if cfg.near else 1))
    blocks, rows = [[]], 0
    for fi, (path, _) in enumerate(files):
        n = pq.read_metadata(path).num_rows
        if blocks[-1] and rows + n > limit:
            blocks.append([])
            rows = 0
        blocks[-1].append(fi)
        rows += n
    return [b for b in blocks if b]


def pass_file(kind: str, block: int) -> str:
    """Block ``block``'s items of every slice (``kind``: exact or bands), relative to the output root."""
    return f"{SLICE_DIR}/{kind}/{block:05d}.parquet"


def read_slice(root, kind: str, k: int):
    """Slice ``k``'s items of ``kind`` (exact or bands), its row groups of every pass file; None when
    no block has any."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = []
    for path in sorted((Path(root) / SLICE_DIR / kind).glob("*.parquet")):
        pf = pq.ParquetFile(path)
        groups = [g for g, s in enumerate(json.loads(pf.schema_arrow.metadata[SLICES_KEY])) if s == k]
        if groups:
            parts.append(pf.read_row_groups(groups).replace_schema_metadata(None))
    return pa.concat_tables(parts) if parts else None


def _write_pass_file(path: Path, table, which: np.ndarray) -> None:
    """``table``'s rows, sorted by their slices ``which``, as one file: a row group per slice (more
    past :data:`ROW_GROUP_ROWS`), each row group's slice in the footer."""
    import json

    import pyarrow.parquet as pq

    from foundation.ledger.atomic import atomic_write

    starts = np.flatnonzero(np.r_[True, which[1:] != which[:-1]])
    runs = list(zip(starts.tolist(), np.r_[starts[1:], len(which)].tolist()))
    groups = [int(which[s]) for s, e in runs for _ in range(-(-(e - s) // ROW_GROUP_ROWS))]
    table = table.replace_schema_metadata({SLICES_KEY: json.dumps(groups).encode()})

    def write(tmp: Path) -> None:
        with pq.ParquetWriter(tmp, table.schema, compression="zstd") as writer:
            for s, e in runs:
                writer.write_table(table.slice(s, e - s), row_group_size=ROW_GROUP_ROWS)

    atomic_write(path, write)


def write_slices(block: int, indexes: list[int], files: list[tuple[str, int]], cfg: DedupConfig,
                 exact_slices: int, near_slices: int, root) -> int:
    """The slice pass of one block of candidates files (their indexes in ``files``): each file read
    once, its exact items (text hash, its crc32 code, key) cut into ``exact_slices`` by
    :func:`text_slices` and its band items (band, bucket, file, row) into ``near_slices`` by
    :func:`band_slices`, one file per kind with items (:func:`pass_file`), a row group per slice.
    Returns the items written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.corpus.steps import DEDUP_COLUMNS

    columns = DEDUP_COLUMNS if cfg.near else [c for c in DEDUP_COLUMNS if c != "minhash"]
    exact, bands = [], []
    for fi in indexes:
        path, build = files[fi]
        table = pq.read_table(path, columns=columns)
        if cfg.exact:
            codes, which = text_slices(table.column("text_hash").to_pylist(), exact_slices)
            exact.append((which, pa.table({"text_hash": table.column("text_hash"), "code": codes,
                                           "build": np.full(table.num_rows, build, np.int64),
                                           "path": table.column("path"), "line": table.column("line"),
                                           "id": table.column("id")}, schema=_schema(EXACT_ITEMS))))
        if cfg.near and table.num_rows:
            full, sig = signature_rows(table.column("minhash"), cfg)
            hashes = np.stack([bucket_hashes(sig[:, b * cfg.rows:(b + 1) * cfg.rows]) for b in range(cfg.bands)], 1)
            bands.append((band_slices(sig, cfg, near_slices).ravel(), pa.table({
                "band": np.tile(np.arange(cfg.bands, dtype=np.int32), len(full)), "bucket": hashes.ravel(),
                "file": np.full(len(full) * cfg.bands, fi, np.int32),
                "row": np.repeat(full.astype(np.int32), cfg.bands)}, schema=_schema(BAND_ITEMS))))
    written = 0
    for kind, parts in (("exact", exact), ("bands", bands)):
        which = np.concatenate([w for w, _ in parts]) if parts else np.zeros(0, np.int64)
        if not len(which):
            continue
        table = pa.concat_tables([t for _, t in parts])
        order = np.argsort(which, kind="stable")
        _write_pass_file(Path(root) / pass_file(kind, block), table.take(pa.array(order)), which[order])
        written += len(which)
    return written


def _schema(fields):
    import pyarrow as pa

    return pa.schema([(n, getattr(pa, t)()) for n, t in fields])


def bucket_members(file_rows: tuple[int, Iterable[tuple]], files: list[tuple[str, int]]):
    """One candidates file's index and the ``(bucket, row)`` pairs that need it -> ``(bucket, (key,
    text hash, signature bytes))`` for each, from one read of the file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fi, wanted = file_rows
    wanted = list(wanted)
    rows = sorted({r for _, r in wanted})
    path, build = files[fi]
    t = pq.read_table(path, columns=["path", "line", "id", "text_hash", "minhash"]).take(pa.array(rows, pa.int64()))
    at = {r: ((build, p, int(ln), i), th, np.asarray(sig, np.uint32).tobytes())
          for r, p, ln, i, th, sig in zip(rows, *(t.column(c).to_pylist() for c in ("path", "line", "id", "text_hash",
                                                                                      "minhash")))}
    return [(bucket, at[r]) for bucket, r in wanted]


def exact_decisions(table) -> list[dict]:
    """Exact items of whole text hashes (a slice's: :func:`write_slices` puts every item of a hash
    in one slice) -> the exact-duplicate decision rows of their groups (one survivor per hash):
    only the rows of hashes seen twice or more become Python objects."""
    from foundation.tables import repeated_groups

    groups = repeated_groups(table, "text_hash", ["text_hash", "build", "path", "line", "id"])
    return [d for members in groups.values() for d in exact_stage(members)[1]]


def band_links(table, files: list[tuple[str, int]], cfg: DedupConfig) -> list[tuple]:
    """Slim band items of whole buckets (``band, bucket, file, row``) -> the verified links of the
    buckets of two or more members: only those members' keys, text hashes and signatures are read
    back from the candidates files (:func:`bucket_members`, one read per file with such a member),
    then :func:`slice_bucket_links`. Sorting stays in numpy: a bucket of one is never a Python object."""
    if not table.num_rows:
        return []
    band, bucket = table.column("band").to_numpy(), table.column("bucket").to_numpy()
    fidx, ridx = table.column("file").to_numpy(), table.column("row").to_numpy()
    order = np.lexsort((ridx, fidx, bucket, band))
    b, k = band[order], bucket[order]
    starts = np.flatnonzero(np.r_[True, (b[1:] != b[:-1]) | (k[1:] != k[:-1])])
    sizes = np.diff(np.r_[starts, len(order)])
    wanted: dict[int, list[tuple[int, int]]] = {}  # file -> (bucket number, row)
    for n, (s, size) in enumerate(zip(starts[sizes > 1], sizes[sizes > 1])):
        for j in order[s:s + size]:
            wanted.setdefault(int(fidx[j]), []).append((n, int(ridx[j])))
    members: dict[int, list[tuple]] = {}
    for fi, need in wanted.items():
        for n, member in bucket_members((fi, need), files):
            members.setdefault(n, []).append(member)
    return [link for group in members.values() for link in slice_bucket_links(group, cfg)]


def signature_rows(column, cfg: DedupConfig) -> tuple[np.ndarray, np.ndarray]:
    """A ``minhash`` list column -> (the rows with a full signature, their signatures as one
    ``(rows, bands x rows)`` uint32 matrix): an empty signature (no text) takes no part in the near dedup."""
    arr = column.combine_chunks()
    width = cfg.bands * cfg.rows
    offsets = arr.offsets.to_numpy()
    full = np.flatnonzero(np.diff(offsets) == width)
    if not len(full):
        return full, np.zeros((0, width), np.uint32)
    values = arr.values.to_numpy(zero_copy_only=False).astype(np.uint32, copy=False)
    return full, values[offsets[full][:, None] + np.arange(width)]  # into .values, whatever the array's offset


def slice_bucket_links(members: Iterable[tuple], cfg: DedupConfig) -> list[tuple]:
    """One LSH bucket of :func:`slice_items` band values -> its verified links. With exact dedup on,
    only the earliest record of each text hash takes part: the exact survivor (every copy of a text
    has the same signature, so its survivor is in every bucket a copy is in), as the reference
    buckets the exact survivors only."""
    best: dict = {}
    for key, th, sig in members:
        group = th if cfg.exact else key
        if group not in best or key < best[group][0]:
            best[group] = (key, sig)
    return bucket_stage([(key, np.frombuffer(sig, np.uint32)) for key, sig in best.values()], cfg.threshold)


def _shards(files: list[tuple[str, int]]) -> int:
    """One decisions shard per input file (each write task then reads about one shard), at most 256."""
    return max(1, min(MAX_SHARDS, len(files)))


def near_rows(edges: Iterable[tuple], sims: Iterable[tuple]) -> list[dict]:
    """Converged ``(record, representative)`` edges and ``(record, link similarity)`` pairs ->
    :func:`near_duplicate_decisions`'s rows: similarity = the record's best link."""
    best: dict = {}
    for node, sim in sims:
        best[node] = max(best.get(node, 0.0), sim)
    parent: dict = {}
    for child, root in edges:
        parent[child] = min(root, parent.get(child, root))
    return [Decision.of(c, "near_duplicate", r, best.get(c, 0.0)).row() for c, r in parent.items()]


def write_shard(out: StageOutput, shard: int, build: int, exact: Iterable[dict], edges: Iterable[tuple],
                sims: Iterable[tuple]) -> list[str]:
    """One shard's decisions (exact decision rows, converged edges, link similarities) -> its files."""
    return write_decision_shard(out, shard, [*exact, *near_rows(edges, sims)], build)


def _key_schema(prefix: str) -> list:
    import pyarrow as pa

    return [(f"{prefix}_{name}", getattr(pa, t)()) for name, t in KEY_FIELDS]


def _key_columns(prefix: str, keys: list) -> dict:
    return {f"{prefix}_{name}": [k[i] for k in keys] for i, (name, _) in enumerate(KEY_FIELDS)}


def _keys_of(table, prefix: str) -> list[tuple]:
    cols = [table.column(f"{prefix}_{name}").to_pylist() for name, _ in KEY_FIELDS]
    return [(int(b), p, int(ln), i) for b, p, ln, i in zip(*cols)]


def _edge_table(edges: list[tuple]):
    """``(child, parent)`` edges."""
    import pyarrow as pa

    return pa.table({**_key_columns("c", [e[0] for e in edges]), **_key_columns("p", [e[1] for e in edges])},
                    schema=pa.schema(_key_schema("c") + _key_schema("p")))


def _link_table(links: list[tuple]):
    """Verified ``(a, b, sim)`` links."""
    import pyarrow as pa

    return pa.table({**_key_columns("a", [x[0] for x in links]), **_key_columns("b", [x[1] for x in links]),
                     "sim": [float(x[2]) for x in links]},
                    schema=pa.schema(_key_schema("a") + _key_schema("b") + [("sim", pa.float64())]))


def _links_of(table) -> list[tuple]:
    return list(zip(_keys_of(table, "a"), _keys_of(table, "b"), table.column("sim").to_pylist()))


EXACT_STATE = [("path", "string"), ("line", "int64"), ("reason", "string"), ("duplicate_of", "string"),
               ("similarity", "float64"), ("build", "int64")]


def _exact_table(rows: list[dict]):
    import pyarrow as pa

    return pa.Table.from_pylist(rows, schema=pa.schema([(n, getattr(pa, t)()) for n, t in EXACT_STATE]))


def _sim_table(sims: list[tuple]):
    import pyarrow as pa

    return pa.table({**_key_columns("c", [s[0] for s in sims]), "sim": [s[1] for s in sims]},
                    schema=pa.schema(_key_schema("c") + [("sim", pa.float64())]))


def _edges_of(table) -> list[tuple]:
    return list(zip(_keys_of(table, "c"), _keys_of(table, "p")))


def _sims_of(table) -> list[tuple]:
    return list(zip(_keys_of(table, "c"), table.column("sim").to_pylist()))


