"""The ``mgte`` command line: parse -> build the config -> run the stage -> report.

Every stage has the same shape (CONTRACT.md)::

    mgte <stage> --config CONFIG.yaml [--input PATH ...] [--output DIR] [--set key.path=value ...]

A stage is a module exposing ``Config`` (a frozen config dataclass with ``input`` and ``output``
fields) and ``run(cfg) -> dict`` (the manifest). Modules are imported only when their stage runs,
so ``mgte corpus`` never imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

# stage name -> module implementing it
STAGES: dict[str, str] = {
    "corpus": "pipelines.corpus",
    "mlm-shards": "pipelines.mlm_shards",
    "pairs": "pipelines.pairs",
    "mine": "pipelines.mine",
    "eval": "pipelines.eval",
    "train mlm": "training.mlm",
    "train cpt": "training.cpt",
    "train trm": "training.trm",
    "train reranker": "training.reranker",
}
TRAIN_KINDS = ("mlm", "cpt", "trm", "reranker")

log = logging.getLogger("mgte")


class UsageError(Exception):
    pass


def stage_module(name: str):
    try:
        return importlib.import_module(STAGES[name])
    except ModuleNotFoundError as exc:
        if exc.name == STAGES[name]:
            raise UsageError(f"stage '{name}' is not part of this version of mgte") from None
        raise


def build_stage_config(name: str, config: str | None, inputs: list[str] | None, output: str | None,
                       overrides: list[str]):
    from dags.config import load_config

    module = stage_module(name)
    sets = list(overrides)
    if inputs:
        sets.append("input=[" + ", ".join(_yaml_quote(p) for p in inputs) + "]")
    if output:
        sets.append(f"output={_yaml_quote(output)}")
    cfg = load_config(module.Config, config, sets, data=None if config else {})
    if not getattr(cfg, "output", None):
        raise UsageError(f"stage '{name}': no output directory (give --output or set `output` in the config)")
    return module, cfg


def _yaml_quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _stage_parser(sub, name: str, help_: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_, description=help_)
    p.add_argument("--config", help="stage config YAML (dags/configs/<stage>/{tiny,paper}.yaml)")
    p.add_argument("--input", nargs="+", help="input files, directories, globs or fsspec URLs")
    p.add_argument("--output", help="output directory")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override any config key (repeatable)")
    return p


HELP = {
    "corpus": "raw text -> clean, language-identified, de-duplicated documents",
    "mlm-shards": "clean documents -> tokenised MLM chunks, sharded by language",
    "pairs": "pair sources -> contrastive pair shards (one source per shard)",
    "mine": "hard-negative mining with an embedding model (FAISS)",
    "eval": "hybrid dense + sparse retrieval, reranking and metrics on a BEIR-format set",
}


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mgte", description="Build long-context multilingual retrievers (mGTE).")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_ in HELP.items():
        _stage_parser(sub, name, help_)
    train = sub.add_parser("train", help="train a model (mlm, cpt, trm, reranker) on Ray Train")
    train_sub = train.add_subparsers(dest="kind", required=True, metavar="KIND")
    for kind in TRAIN_KINDS:
        _stage_parser(train_sub, kind, f"train the {kind} stage")
    audit = sub.add_parser("audit", help="HTML audit report (plots, samples) of a corpus output directory")
    audit.add_argument("dir", help="a finished `mgte corpus` output directory")
    audit.add_argument("--output", help="report directory (default: DIR/audit)")
    dag = sub.add_parser("dag", help="run a whole DAG of stages")
    dag_sub = dag.add_subparsers(dest="dag_command", required=True, metavar="ACTION")
    run = dag_sub.add_parser("run", help="run the DAG NAME (dags/NAME.py)")
    run.add_argument("name", help="DAG name, e.g. full")
    run.add_argument("--config", required=True, help="DAG config YAML (dags/configs/NAME/tiny.yaml)")
    run.add_argument("--output", required=True, help="root output directory; each stage writes a subdirectory")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="STAGE.KEY=VALUE",
                     help="override a DAG or stage key, e.g. corpus.lid.min_score=0.6")
    return parser


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "audit":
        from pipelines.audit import write_audit

        page = write_audit(Path(args.dir), Path(args.output) if args.output else None)
        print(page)
        return 0
    if args.command == "dag":
        from dags.runner import run_dag

        run_dag(args.name, args.config, args.output, args.overrides)
        return 0
    name = f"train {args.kind}" if args.command == "train" else args.command
    module, cfg = build_stage_config(name, args.config, args.input, args.output, args.overrides)
    manifest = module.run(cfg)
    counts = (manifest or {}).get("counts")
    print(f"mgte {name}: done -> {cfg.output}" + (f" {counts}" if counts else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("apache_beam", "ray", "matplotlib", "urllib3", "filelock", "datatrove"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from dags.config import ConfigError
    from pipelines.stage import MgteError
    from storage_schemas import ManifestError, SchemaError

    try:
        return dispatch(args)
    except (ConfigError, UsageError, MgteError, SchemaError, ManifestError, FileNotFoundError) as exc:
        print(f"mgte: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mgte: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
