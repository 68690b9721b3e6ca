"""docs/reliability.md row 12: a parquet file whose string page holds damaged bytes (values that are
not UTF-8) costs the corpus stage only those records, on every engine; it used to fail the stage
(``task over .../damaged.parquet failed: UnicodeDecodeError``, exit 1)."""

import json

import pyarrow.parquet as pq
import pytest

from pipelines.corpus import run
from tests.pipelines.test_readers import damage_utf8

from .conftest import RAW, TINY, cli, corpus_config, outcome

TEXT_ROW, ID_ROW = 251, 420  # both kept in a clean run, neither the original of a duplicate


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The bundled parquet sample rewritten uncompressed, plain-encoded, 100 rows a group (8 groups),
    clean and with the text of one record and the id of another damaged; and the clean run."""
    base = tmp_path_factory.mktemp("damaged-parquet")
    table = pq.read_table(RAW / "03-udhr-c.parquet")
    for name in ("clean", "damaged"):
        (base / name).mkdir()
        pq.write_table(table, base / name / "udhr.parquet", row_group_size=100, compression="none",
                       use_dictionary=False)
    rows = table.to_pylist()
    damage_utf8(base / "damaged" / "udhr.parquet", rows[TEXT_ROW]["text"])
    damage_utf8(base / "damaged" / "udhr.parquet", rows[ID_ROW]["id"])
    manifest = run(corpus_config(base / "ref", "engine=local", inputs=(str(base / "clean"),)))
    return base, manifest, outcome(base / "ref")


def _expected(ref_manifest, ref_outcome):
    assert ref_outcome[("udhr.parquet", TEXT_ROW)][0] == ref_outcome[("udhr.parquet", ID_ROW)][0] == "kept"
    counts = dict(ref_manifest["counts"], kept=ref_manifest["counts"]["kept"] - 2,
                  quarantined=ref_manifest["counts"]["quarantined"] + 2)
    got = dict(ref_outcome)
    got[("udhr.parquet", TEXT_ROW)] = ("quarantined", None, "invalid_utf8: row group 2 of 8, field 'text': "
                                       "byte 5: invalid start byte", None)
    got[("udhr.parquet", ID_ROW)] = ("quarantined", None, "invalid_utf8: row group 4 of 8, field 'id': "
                                     "byte 5: invalid start byte", None)
    return counts, got


def _check(out, manifest, files):
    base, ref_manifest, ref_outcome = files
    counts, expected = _expected(ref_manifest, ref_outcome)
    assert manifest["counts"] == counts
    c = manifest["counts"]
    assert c["input"] == c["kept"] + c["dropped"] + c["quarantined"] == 784
    assert outcome(out) == expected  # every other record exactly as in the clean run
    bad = pq.read_table(out / "quarantine", filters=[("line", "in", [TEXT_ROW, ID_ROW])]).to_pylist()
    assert {(r["path"], r["line"], r["field"]) for r in bad} == {
        (str(base / "damaged" / "udhr.parquet"), TEXT_ROW, "text"),
        (str(base / "damaged" / "udhr.parquet"), ID_ROW, "id")}


def test_cli_local_engine_quarantines_the_damaged_records_and_finishes(files, tmp_path):
    base = files[0]
    proc = cli("corpus", "--config", str(TINY), "--input", str(base / "damaged"), "--output", str(tmp_path),
               "--set", "engine=local")
    assert proc.returncode == 0 and (tmp_path / "_SUCCESS").exists()
    _check(tmp_path, json.loads((tmp_path / "manifest.json").read_text()), files)


def test_beam_engine_gives_the_same(files, tmp_path):
    base = files[0]
    manifest = run(corpus_config(tmp_path, "engine=beam", "beam.options=--runner=DirectRunner",
                                 inputs=(str(base / "damaged"),)))
    assert manifest["extra"]["engine"] == "beam"
    _check(tmp_path, manifest, files)
