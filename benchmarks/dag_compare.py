"""Run the tiny DAG shrunk to the test's size (every step in process) in REPO and print each step's counts, dropped
reasons, losses, eval metrics and a digest of its data tables (path and miner columns left out), for comparing
two commits: python benchmarks/dag_compare.py REPO OUT."""
import hashlib, json, sys, os
from pathlib import Path
repo, out = Path(sys.argv[1]), Path(sys.argv[2])
os.chdir(repo); sys.path.insert(0, str(repo))
from dags.cli import main
from tests.dags.test_full_dag import SHRINK  # the DAG test's size: every step in process
argv = ["dag", "run", "full", "--config", "dags/configs/full/tiny.yaml", "--output", str(out)]
for s in SHRINK: argv += ["--set", s]
assert main(argv) == 0
import pyarrow.parquet as pq
res = {}
for step in sorted(p.name for p in out.iterdir() if (p / "manifest.json").is_file()):
    d = out / step
    m = json.loads((d / "manifest.json").read_text())
    rec = {"counts": m["counts"], "dropped": m.get("dropped_by_reason")}
    if (d / "metrics.jsonl").exists():
        rec["losses"] = [json.loads(l).get("loss") for l in (d / "metrics.jsonl").read_text().splitlines()]
    if (d / "metrics.json").exists():
        rec["metrics"] = json.loads((d / "metrics.json").read_text()).get("methods")
    data = sorted((d / "data").rglob("*.parquet")) if (d / "data").is_dir() else []
    h = hashlib.sha256()
    for f in data:
        t = pq.read_table(f)
        t = t.drop([c for c in ("path", "miner") if c in t.column_names])
        h.update(repr(sorted(map(str, t.to_pylist()))).encode())
    rec["data_digest"] = h.hexdigest()[:16] if data else None
    res[step] = rec
print("RESULT " + json.dumps(res, sort_keys=True))
