"""The model card (``README.md``, Hugging Face conventions) of every model directory mgte writes.

:func:`write_card` renders it from the directory itself (what kind of model, its pooling,
Matryoshka sizes, sparse side, whether it needs ``trust_remote_code``) and the lineage the stage
hands over (the stage, its config hash, its inputs and their builds, steps, final numbers).
:func:`add_evaluation` puts held-out metrics into it later (the DAG does, after its evaluations):
one table row per evaluation, replaced when the same evaluation runs again.

The card is documentation, not part of the model: ``checksums.json`` leaves it out
(:mod:`model.files`), so writing metrics into it never makes a model fail its check.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

CARD = "README.md"
EVAL_BEGIN, EVAL_END = "<!-- mgte:evaluation -->", "<!-- /mgte:evaluation -->"
EVAL_HEADER = "| evaluation | data | method | nDCG@10 | recall@100 |\n|---|---|---|---|---|"
NO_EVAL = "Not evaluated by a DAG yet: `mgte eval --set model=DIR` on your held-out set."


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def model_facts(directory: Path) -> dict:
    """What kind of model the directory holds and how each library loads it."""
    config = _json(directory / "config.json")
    archs = config.get("architectures") or []
    trm = _json(directory / "trm.json")
    pooling_cfg = _json(directory / "1_Pooling" / "config.json")
    if trm:
        kind = "trm"
    elif any("SequenceClassification" in a for a in archs):
        kind = "reranker"
    elif any("MaskedLM" in a for a in archs):
        kind = "mlm"
    else:
        kind = "encoder"
    pooling = trm.get("pooling") or ("cls" if pooling_cfg.get("pooling_mode_cls_token") else
                                     "mean" if pooling_cfg.get("pooling_mode_mean_tokens") else None)
    modules = _json(directory / "modules.json") if (directory / "modules.json").is_file() else []
    st = _json(directory / "sentence_bert_config.json")
    return {
        "kind": kind, "architecture": archs[0] if archs else config.get("model_type", "?"),
        "model_type": config.get("model_type"), "hidden_size": config.get("hidden_size"),
        "layers": config.get("num_hidden_layers"), "remote_code": "auto_map" in config,
        "pooling": pooling, "normalized": any("Normalize" in m.get("type", "") for m in modules),
        "matryoshka_dims": trm.get("matryoshka_dims") or [],
        "sparse": bool(trm) and (directory / "sparse" / "modules.json").is_file(),
        "sentence_transformers": bool(modules), "max_seq_length": st.get("max_seq_length"),
        "max_position_embeddings": config.get("max_position_embeddings"),
    }


def _usage(facts: dict) -> str:
    remote = ", trust_remote_code=True" if facts["remote_code"] else ""
    lines = ["```python"]
    if facts["kind"] == "trm":
        dims = facts["matryoshka_dims"]
        lines += ["from sentence_transformers import SentenceTransformer, SparseEncoder", "",
                  f'model = SentenceTransformer("DIR"{remote})  # dense, {facts["pooling"]} pooling, normalised',
                  'dense = model.encode(["what is a glacier?"])']
        if dims:
            lines += [f'small = SentenceTransformer("DIR"{remote}, truncate_dim={dims[0]})'
                      f'  # Matryoshka: the first d dims; normalize_embeddings=True for unit length']
        lines += ['sparse = SparseEncoder("DIR/sparse", trust_remote_code=True)  # {token: weight}, dot product',
                  'weights = sparse.encode(["what is a glacier?"])']
    elif facts["kind"] == "reranker":
        lines += ["from sentence_transformers import CrossEncoder", "",
                  f'reranker = CrossEncoder("DIR"{remote})',
                  'scores = reranker.predict([("what is a glacier?", "A glacier is a river of ice.")])']
    elif facts["sentence_transformers"]:
        lines += ["from sentence_transformers import SentenceTransformer", "",
                  f'model = SentenceTransformer("DIR"{remote})  # {facts["pooling"]} pooling',
                  'vectors = model.encode(["what is a glacier?"])']
    auto = {"reranker": "AutoModelForSequenceClassification", "mlm": "AutoModelForMaskedLM"}.get(facts["kind"], "AutoModel")
    lines += ["", f"from transformers import {auto}, AutoTokenizer",
              f'hf = {auto}.from_pretrained("DIR"{remote})',
              'tokenizer = AutoTokenizer.from_pretrained("DIR")', "",
              "from pipelines.embedding import load_embedder, load_reranker  # mgte's own API" if facts["kind"] != "mlm"
              else "# mgte: `mgte train cpt --set init=DIR` continues from this encoder"]
    if facts["kind"] == "trm":
        lines.append('load_embedder("DIR").encode(["what is a glacier?"], max_length=512, sparse=True)')
    elif facts["kind"] == "reranker":
        lines.append('load_reranker("DIR").score(["q"], ["d"], max_length=512)')
    elif facts["kind"] == "encoder":
        lines.append('load_embedder("DIR").encode(["what is a glacier?"], max_length=512)')
    lines.append("```")
    return "\n".join(lines)


def _front_matter(facts: dict, lineage: dict) -> str:
    tags = ["mgte", "sentence-transformers"]
    pipeline = {"trm": "sentence-similarity", "encoder": "sentence-similarity", "reranker": "text-ranking",
                "mlm": "fill-mask"}[facts["kind"]]
    if facts["kind"] == "trm":
        tags += ["sparse-encoder", "matryoshka"]
    lines = ["---", f"library_name: {'sentence-transformers' if facts['kind'] != 'mlm' else 'transformers'}",
             f"pipeline_tag: {pipeline}", "tags:"] + [f"- {t}" for t in tags]
    base = lineage.get("init")
    if base and not os.path.isabs(str(base)) and "/" in str(base):  # a hub name, not a local path
        lines.append(f"base_model: {base}")
    return "\n".join(lines + ["---"])


def _lineage(lineage: dict) -> str:
    rows = [f"- stage: `{lineage.get('stage', '?')}`, config hash `{lineage.get('config_hash', '?')}`, "
            f"code `{lineage.get('code_version', '?')}`"]
    if lineage.get("init"):
        rows.append(f"- started from: `{lineage['init']}`")
    for item in lineage.get("inputs", []):
        built = (f" (a `{item['stage']}` build, config hash `{item['config_hash']}`)" if item.get("stage") else "")
        rows.append(f"- trained on: `{item['path']}`{built}")
    if lineage.get("counts"):
        rows.append(f"- records: {json.dumps(lineage['counts'])}")
    final = {k: v for k, v in (lineage.get("final") or {}).items() if v is not None}
    if final:
        rows.append(f"- training: {', '.join(f'{k} {v:.4g}' if isinstance(v, float) else f'{k} {v}' for k, v in final.items())}")
    return "\n".join(rows)


def render(facts: dict, lineage: dict, evaluation: str = NO_EVAL) -> str:
    kind = {"trm": "text retrieval model (dense + sparse)", "encoder": "text encoder (contrastively pre-trained)",
            "reranker": "cross-encoder reranker", "mlm": "masked-language-model encoder"}[facts["kind"]]
    details = [f"- architecture: `{facts['architecture']}` ({facts['layers']} layers, hidden {facts['hidden_size']}"
               f"{', custom code: load with trust_remote_code=True' if facts['remote_code'] else ''})"]
    if facts["pooling"]:
        details.append(f"- pooling: {facts['pooling']}{', normalised' if facts['normalized'] else ''}")
    if facts["matryoshka_dims"]:
        details.append(f"- Matryoshka sizes: {', '.join(map(str, facts['matryoshka_dims']))} (keep the first d dims)")
    if facts["sparse"]:
        details.append("- sparse: `sparse/` is a SparseEncoder over the same weights; a text's vector is "
                       "max over its tokens of ReLU(W h_t), special tokens left out; score = dot product")
    if facts["max_seq_length"]:
        details.append(f"- trained at up to {facts['max_seq_length']} tokens "
                       f"(positions up to {facts['max_position_embeddings']})")
    return "\n\n".join([
        _front_matter(facts, lineage), f"# {lineage.get('name', 'mgte model')}",
        f"A {kind} trained with mgte (`mgte {lineage.get('stage', '?').replace('-', ' ', 1)}`).",
        "## Usage", _usage(facts),
        "`DIR` is this directory.", "## Model", "\n".join(details),
        "## Lineage", _lineage(lineage), "## Evaluation", f"{EVAL_BEGIN}\n{evaluation}\n{EVAL_END}", ""])


def write_card(directory: str | os.PathLike, lineage: dict) -> Path:
    """Write ``README.md`` into a model directory (keeps the evaluation rows of an earlier card)."""
    directory = Path(directory)
    path = directory / CARD
    evaluation = _evaluation_block(path.read_text(encoding="utf-8")) if path.is_file() else NO_EVAL
    tmp = path.with_name(CARD + ".tmp")
    tmp.write_text(render(model_facts(directory), lineage, evaluation), encoding="utf-8")
    os.replace(tmp, path)
    return path


def _evaluation_block(text: str) -> str:
    if EVAL_BEGIN in text and EVAL_END in text:
        return text.split(EVAL_BEGIN, 1)[1].split(EVAL_END, 1)[0].strip("\n")
    return NO_EVAL


def add_evaluation(directory: str | os.PathLike, name: str, data: str, methods: dict[str, dict]) -> bool:
    """Put one evaluation's metrics (``methods``: method -> {"ndcg@10": x, "recall@100": y}) into the
    card's table, replacing that evaluation's earlier rows. False when the directory has no card."""
    path = Path(directory) / CARD
    if not path.is_file():
        return False
    text = path.read_text(encoding="utf-8")
    old = _evaluation_block(text)
    rows = [r for r in old.splitlines() if r.startswith("| ") and not r.startswith(("| evaluation ", f"| {name} |"))]

    def cell(v):
        return f"{v:.4f}" if isinstance(v, (int, float)) else "-"

    rows += [f"| {name} | {data} | {method} | {cell(m.get('ndcg@10'))} | {cell(m.get('recall@100'))} |"
             for method, m in methods.items()]
    block = "\n".join([EVAL_HEADER, *sorted(rows)])
    text = text.replace(f"{EVAL_BEGIN}\n{old}\n{EVAL_END}", f"{EVAL_BEGIN}\n{block}\n{EVAL_END}")
    tmp = path.with_name(CARD + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return True
