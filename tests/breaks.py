"""Deliberate breaks (issue 21; learning breaks: issue 25; audit breaks: issue 26): the suite must fail on each.

Each break edits one source file (an exact text replaced), runs the tests that guard the behaviour,
expects at least one failure, and restores the file whatever happens. Run it before and after a
change to the suite to show the suite still catches what it caught:

    python tests/breaks.py                 # each break: its guarding test files
    python tests/breaks.py --full          # each break: the whole suite (README's test command)
    python tests/breaks.py --repo DIR      # against another checkout (e.g. an older commit)
    python tests/breaks.py --only dedup    # one break by name

Not collected by pytest (not ``test_*.py``); prints one line per break and exits 1 if the suite
passed with any break in place.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Break:
    name: str
    what: str
    file: str
    edits: tuple[tuple[str, str], ...]  # (exact old text, new text), each must occur once
    tests: tuple[str, ...]


BREAKS = (
    Break("resume-skips-a-task", "a resumed data stage skips one of its unfinished tasks",
          "pipelines/contract.py",
          (("    unfinished = [name for name in names if out.task_marker(name, phase.deps) is None]\n",
            "    unfinished = [name for name in names if out.task_marker(name, phase.deps) is None]\n"
            "    if 0 < len(unfinished) < len(names):\n        unfinished = unfinished[1:]\n"),),
          ("tests/pipelines/corpus/test_faults.py", "tests/pipelines/test_mlm_shards.py")),
    Break("dedup-drops-a-distinct-document", "near-dup links are not verified: documents sharing one band are merged",
          "pipelines/corpus/dedup_engines.py",
          (("            ok = sims >= cfg.threshold\n", "            ok = sims >= 0.0\n"),),
          ("tests/pipelines/corpus/test_dedup_columnar.py", "tests/pipelines/corpus/test_engines.py")),
    Break("dedup-clusters-not-converged",
          "the dedup through files writes the near-duplicate clusters after its first check, converged or not",
          "pipelines/corpus/dedup_rounds.py",
          (("        if _bad(root, step) == 0:\n", "        if _bad(root, step) is not None:\n"),),
          ("tests/pipelines/corpus/test_distributed_dedup.py::test_beam_writes_the_local_decisions_on_a_chain",
           "tests/pipelines/corpus/test_distributed_dedup.py::test_a_round_cap_that_is_too_low_refuses_to_write")),
    Break("ray-kill-loses-a-record", "Ray tasks are not retried and a failed task's records are silently lost",
          "pipelines/engines.py",
          (("        ds = ds.map(functools.partial(_ray_task, fn, driver_env(), pack_items(items)), num_cpus=1, **self.retry_args)\n",
            "        ds = ds.map(functools.partial(_ray_task, fn, driver_env(), pack_items(items)), num_cpus=1, max_retries=0)\n"),
           ("            inner = find_task_failed(exc)\n",
            "            return [results.get(i) for i in range(len(items))]\n            inner = find_task_failed(exc)\n")),
          ("tests/pipelines/corpus/test_engine_faults.py",)),
    Break("checkpoint-not-verified", "a checkpoint's files are not checked against their sha256",
          "training/checkpoint.py",
          (('        if sha256_file(file) != meta["sha256"]:\n', '        if False and sha256_file(file) != meta["sha256"]:\n'),),
          ("tests/training/test_checkpoint.py", "tests/training/test_loop.py")),
    Break("dag-step-not-rerun", "a DAG step whose upstream step's output changed is not rebuilt",
          "dags/lineage.py",
          (("               for name, ident in upstream.items() if prev[\"upstream\"].get(name) != ident]\n",
            "               for name, ident in upstream.items() if name.startswith(\"input:\") and "
            "prev[\"upstream\"].get(name) != ident]\n"),),
          ("tests/dags/test_lineage.py",)),
    Break("mine-ties-reversed", "tied mining scores are broken by the larger candidate id first",
          "pipelines/mine/search.py",
          (("    keys[sorted(range(len(ids)), key=ids.__getitem__)] = np.arange(len(ids))\n",
            "    keys[sorted(range(len(ids)), key=ids.__getitem__)] = np.arange(len(ids))[::-1]\n"),),
          ("tests/pipelines/mine/test_stage.py",)),
    Break("trm-loss-sign-flipped", "the TRM minimises minus its loss",
          "training/trm/loss.py",
          (('            "loss": s.sparse_weight * sparse + dense + s.sparse_l1 * reg}\n',
            '            "loss": -(s.sparse_weight * sparse + dense + s.sparse_l1 * reg)}\n'),),
          ("tests/training/trm/test_learning.py",)),
    Break("trm-labels-off-by-one", "each TRM query's target is its first mined negative, not its positive",
          "training/trm/task.py",
          (("            labels = torch.arange(batch, device=q.device) * group + rank() * n_local\n",
            "            labels = torch.arange(batch, device=q.device) * group + rank() * n_local + 1\n"),),
          ("tests/training/trm/test_learning.py",)),
    Break("trm-temperature-ignored", "both TRM InfoNCE temperatures are 1.0 whatever the config",
          "training/trm/loss.py",
          (("    dense = matryoshka_info_nce(q, d, s.mrl_temperature, s.dims,",
            "    dense = matryoshka_info_nce(q, d, 1.0, s.dims,"),
           ("    sparse = sparse_info_nce(q_terms, d_terms, s.sparse_temperature,",
            "    sparse = sparse_info_nce(q_terms, d_terms, 1.0,")),
          ("tests/training/trm/test_learning.py",)),
    Break("trm-sparse-head-detached", "the TRM's term weights carry no gradient (the sparse loss trains nothing)",
          "training/trm/loss.py",
          (("    w = weights.float()\n", "    w = weights.float().detach()\n"),),
          ("tests/training/trm/test_learning.py",)),
    Break("reranker-loss-sign-flipped", "the reranker minimises minus its group InfoNCE",
          "training/reranker/loss.py",
          (("        return F.cross_entropy(logits, labels, reduction=reduction)\n",
            "        return -F.cross_entropy(logits, labels, reduction=reduction)\n"),),
          ("tests/training/reranker/test_learning.py",)),
    Break("reranker-labels-off-by-one", "each reranker group's target is its first negative, not its positive",
          "training/reranker/loss.py",
          (("        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)",
            "        labels = torch.ones(logits.shape[0], dtype=torch.long, device=logits.device)"),),
          ("tests/training/reranker/test_learning.py",)),
    Break("decontam-near-skipped", "decontamination checks only exact copies: a near copy of an eval text stays",
          "pipelines/decontam.py",
          (("            return Match(\"exact\", 1.0, self.refs[hit])\n",
            "            return Match(\"exact\", 1.0, self.refs[hit])\n        return None\n"),),
          ("tests/pipelines/test_decontam.py",)),
    Break("decontam-unverified", "decontamination takes every LSH candidate as a near copy (no Jaccard check)",
          "pipelines/decontam.py",
          (("if sim >= self.dedup.threshold and (best is None", "if (best is None"),),
          ("tests/pipelines/test_decontam.py",)),
    # issue 26: the corpus audit
    Break("audit-drops-to-the-wrong-language", "the audit's matrix counts every drop under `und`",
          "pipelines/audit/corpus_langs.py",
          (("            m.dropped[(_lang(lang), reason)] += n\n",
            "            m.dropped[(_lang(None), reason)] += n\n"),),
          ("tests/pipelines/corpus/test_audit_matrix.py",)),
    Break("token-counts-with-special-tokens", "the stored token counts include <s> and </s>",
          "pipelines/corpus/steps.py",
          (("backend.encode_batch(batch, add_special_tokens=False)",
            "backend.encode_batch(batch, add_special_tokens=True)"),),
          ("tests/pipelines/corpus/test_audit_matrix.py",)),
    Break("audit-images-wider-than-the-page", "audit images keep their pixel width (no max-width:100%)",
          "pipelines/audit/page.py",
          (('IMG_STYLE = "max-width:100%;height:auto"', 'IMG_STYLE = "height:auto"'),),
          ("tests/pipelines/test_audit_layout.py",)),
    Break("scale-plants-half-the-duplicates", "the scale benchmark's synthetic corpus plants half the requested duplicates",
          "benchmarks/scale.py",
          (("    n_dup = round(dup_rate * n)\n    n_orig", "    n_dup = round(dup_rate * n / 2)\n    n_orig"),),
          ("tests/test_scale_benchmark.py",)),
    Break("scale-runs-a-cell-over-budget", "the scale benchmark runs a cell whose memory estimate exceeds the budget",
          "benchmarks/scale.py",
          (("    if estimate > budget_mb:\n", "    if estimate > budget_mb * 10:\n"),),
          ("tests/test_scale_benchmark.py",)),
)


def apply(repo: Path, brk: Break) -> str:
    path = repo / brk.file
    original = path.read_text()
    text = original
    for old, new in brk.edits:
        if text.count(old) != 1:
            raise SystemExit(f"{brk.name}: {brk.file} no longer holds the text to break exactly once: {old.strip()!r}")
        text = text.replace(old, new)
    path.write_text(text)
    return original


def run_break(repo: Path, brk: Break, full: bool) -> tuple[bool, float, str]:
    original = apply(repo, brk)
    try:
        t0 = time.time()
        targets = ["tests"] if full else list(brk.tests)
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *targets],
                              cwd=repo, capture_output=True, text=True)
        tail = [line for line in proc.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))][:2]
        return proc.returncode != 0, time.time() - t0, "; ".join(tail) or proc.stdout.strip().splitlines()[-1]
    finally:
        (repo / brk.file).write_text(original)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=str(Path(__file__).resolve().parents[1]))
    parser.add_argument("--full", action="store_true", help="run the whole suite for each break")
    parser.add_argument("--only", help="one break by name (a prefix is enough)")
    args = parser.parse_args()
    repo = Path(args.repo).resolve()
    missed = 0
    for brk in BREAKS:
        if args.only and not brk.name.startswith(args.only):
            continue
        caught, seconds, detail = run_break(repo, brk, args.full)
        missed += not caught
        print(f"{'CAUGHT' if caught else 'MISSED'} {brk.name} ({brk.what}) in {seconds:.0f} s: {detail}", flush=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
