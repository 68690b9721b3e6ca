"""Evaluation stage (``mgte eval``): retrieval on a BEIR-format set, trec_eval-exact metrics, report.

Modules: ``beir`` (reading with accounting), ``metrics`` (trec_eval semantics, numpy),
``retrieval`` (FAISS dense, inverted-index sparse, hybrid, rerank), ``bm25`` (reference run),
``cache`` (corpus embeddings), ``report`` (HTML + PNG), ``mteb_wrapper`` (mteb encoder protocol),
``stage`` (``Config`` and the steps), ``tasks`` (the tasks on the stage contract and ``run``).
"""

from pipelines.eval.stage import Config
from pipelines.eval.tasks import run

__all__ = ["Config", "run"]
