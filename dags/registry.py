"""The stage registry: which module implements which ``mgte`` command, and how its config is built.

A stage is a module exposing ``Config`` (a frozen config dataclass with ``input`` and ``output``
fields) and ``run(cfg) -> dict`` (the manifest). Modules are imported only when their stage runs,
so ``mgte corpus`` never imports torch. Only stages whose module exists are listed.
"""

from __future__ import annotations

import importlib
import importlib.util

from foundation.config import load_config
from foundation.errors import UsageError

# stage name -> (module implementing it, one-line help)
_ALL: dict[str, tuple[str, str]] = {
    "corpus": ("pipelines.corpus", "raw text -> clean, language-identified, de-duplicated documents"),
    "mlm-shards": ("pipelines.mlm_shards", "clean documents -> tokenised MLM chunks, sharded by language"),
    "pairs": ("pipelines.pairs", "pair sources -> contrastive pair shards (one source per shard)"),
    "mine": ("pipelines.mine", "hard-negative mining with an embedding model (FAISS)"),
    "eval": ("pipelines.eval", "hybrid dense + sparse retrieval, reranking and metrics on a BEIR-format set"),
    "train mlm": ("training.mlm", "masked-language-model pre-training (MLM-2048, MLM-8192)"),
    "train cpt": ("training.cpt", "contrastive pre-training on pair shards"),
    "train trm": ("training.trm", "TRM fine-tuning (Matryoshka dense + sparse) on mined negatives"),
    "train reranker": ("training.reranker", "cross-encoder reranker fine-tuning"),
}


def _exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


STAGES: dict[str, str] = {name: mod for name, (mod, _) in _ALL.items() if _exists(mod)}
HELP: dict[str, str] = {name: _ALL[name][1] for name in STAGES}
TRAIN_KINDS: tuple[str, ...] = tuple(name.split(" ", 1)[1] for name in STAGES if name.startswith("train "))


def stage_module(name: str):
    if name not in STAGES:
        raise UsageError(f"stage '{name}' is not part of this version of mgte (stages: {', '.join(STAGES)})")
    return importlib.import_module(STAGES[name])


def _yaml_quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def build_stage_config(name: str, config: str | None, inputs: list[str] | None, output: str | None,
                       overrides: list[str]):
    """The stage's module and its config: YAML + ``--input``/``--output`` + ``--set``."""
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
