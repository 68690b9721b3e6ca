"""The ``mgte`` command line: parse -> build the config -> run the stage -> report.

Every stage has the same shape (CONTRACT.md)::

    mgte <stage> --config CONFIG.yaml [--input PATH ...] [--output DIR] [--set key.path=value ...]

Every failure that reaches here is one line on stderr (a traceback only with ``--debug``): exit 2
for usage and config errors, 1 for data and infrastructure failures.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from pathlib import Path

from dags.registry import HELP, TRAIN_KINDS, build_stage_config
from foundation.errors import MgteError, UsageError

log = logging.getLogger("mgte")


def _stage_parser(sub, name: str, help_: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_, description=help_)
    p.add_argument("--config", help="stage config YAML (dags/configs/<stage>/{tiny,paper}.yaml)")
    p.add_argument("--input", nargs="+", help="input files, directories, globs or fsspec URLs")
    p.add_argument("--output", help="output directory")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override any config key (repeatable)")
    return p


def _share(text: str) -> float:
    """A share in [0, 1] (argparse type: a bad one is a one-line usage error)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not in [0, 1]")
    return value


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mgte", description="Build long-context multilingual retrievers (mGTE).")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of a failure")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_ in HELP.items():
        if not name.startswith("train "):
            _stage_parser(sub, name, help_)
    train = sub.add_parser("train", help=f"train a model ({', '.join(TRAIN_KINDS)}) on Ray Train")
    train_sub = train.add_subparsers(dest="kind", required=True, metavar="KIND")
    for kind in TRAIN_KINDS:
        _stage_parser(train_sub, kind, HELP[f"train {kind}"])
    audit = sub.add_parser("audit", help="HTML audit report (plots, samples) of any stage output directory, or "
                                         "`audit diff OLD NEW`: two outputs of one stage side by side",
                           usage="mgte audit [-h] DIR [--output D] [--flag-share SHARE]\n"
                                 "       mgte audit diff OLD NEW [--output D]")
    audit.add_argument("dir", nargs="+", metavar="DIR",
                       help="a finished stage output directory (corpus, mlm-shards, pairs, mine, train, eval); or "
                            "`diff OLD NEW`: two finished outputs of the same stage (HTML page + diff.json)")
    audit.add_argument("--output", help="report directory (default: DIR/audit; for diff: NEW/audit/diff)")
    audit.add_argument("--flag-share", type=_share, default=None, metavar="SHARE",
                       help="corpus audit: flag a language that loses more than SHARE (0..1) of its input to one "
                            "filter (default 0.3)")
    dag = sub.add_parser("dag", help="run a whole DAG of stages")
    dag_sub = dag.add_subparsers(dest="dag_command", required=True, metavar="ACTION")
    run = dag_sub.add_parser("run", help="run the DAG NAME (dags/NAME.py)")
    run.add_argument("name", help="DAG name: full (the whole build) or finetune (fine-tune an encoder)")
    run.add_argument("--config", required=True, help="DAG config YAML (dags/configs/NAME/tiny.yaml)")
    run.add_argument("--output", required=True, help="root output directory; each stage writes a subdirectory")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="STEP.KEY=VALUE",
                     help="override a step's stage key, e.g. corpus.lid.min_score=0.6, or a DAG variable "
                          "its config declares (vars), e.g. init=MODEL")
    return parser


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "audit":
        output = Path(args.output) if args.output else None
        if args.dir[0] == "diff" and (len(args.dir) > 1 or not Path("diff").is_dir()):
            if len(args.dir) != 3:
                raise UsageError(f"mgte audit diff takes two stage output directories, OLD and NEW; got "
                                 f"{len(args.dir) - 1}" + (f": {' '.join(args.dir[1:])}" if len(args.dir) > 1 else ""))
            from pipelines.audit.diff import write_diff

            print(write_diff(Path(args.dir[1]), Path(args.dir[2]), output))
            return 0
        if len(args.dir) != 1:
            raise UsageError(f"mgte audit takes one stage output directory (or `diff OLD NEW`); got "
                             f"{' '.join(args.dir)}")
        from pipelines.audit import write_audit

        extra = {} if args.flag_share is None else {"flag_share": args.flag_share}
        print(write_audit(Path(args.dir[0]), output, **extra))
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


def one_line(exc: BaseException) -> tuple[str, int]:
    """A failure as (one line naming what to act on, exit code)."""
    from storage_schemas import ManifestError, SchemaError

    if isinstance(exc, MgteError):
        return str(exc), exc.exit_code
    if isinstance(exc, (SchemaError, ManifestError)):
        return str(exc), 1
    if isinstance(exc, FileNotFoundError):
        return f"{exc.filename or exc}: not found" if exc.filename else str(exc), 1
    if isinstance(exc, OSError):
        where = exc.filename or "a file"
        return f"{where}: {exc.strerror or exc} (check the path, its permissions and free space)", 1
    if isinstance(exc, ImportError):
        return (f"a module is missing: {exc.name or exc} ({exc}); install the extra that provides it "
                f"(e.g. pip install -e '.[gpu]')"), 1
    if isinstance(exc, MemoryError):
        return "out of memory; lower the batch or chunk sizes in the config", 1
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first} (rerun with --debug for the traceback)", 1


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("apache_beam", "ray", "matplotlib", "urllib3", "filelock", "datatrove"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return dispatch(args)
    except KeyboardInterrupt:
        print("mgte: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # every failure reaching the user is one line; --debug shows the traceback
        if args.debug:
            traceback.print_exc()
        message, code = one_line(exc)
        print(f"mgte: error: {' '.join(message.split())}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
