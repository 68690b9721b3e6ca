"""The whole mGTE build, raw corpus to evaluation. Wiring only; configs in dags/configs/full/.

corpus -> mlm-shards (2048) -> mlm-2048 -> mlm-8192 (from mlm-2048, shards of 8192)
pairs -> cpt (from mlm-8192) -> mine (hard negatives with the CPT model) -> trm (from cpt) and
reranker (from mlm-8192, no CPT, as the paper) -> eval of every model built: the TRM dense, sparse,
hybrid and the reranker on the hybrid list, beside BM25 and all-MiniLM-L6-v2.
"""

from dags.dag import Dag, Step

DAG = Dag("full", (
    Step("corpus", stage="corpus"),
    Step("mlm-shards", stage="mlm-shards", inputs=("corpus",)),
    Step("mlm-shards-8192", stage="mlm-shards", inputs=("corpus",)),
    Step("mlm-2048", stage="train mlm", inputs=("mlm-shards",)),
    Step("mlm-8192", stage="train mlm", inputs=("mlm-shards-8192",), init="mlm-2048/model"),
    Step("pairs", stage="pairs"),
    Step("cpt", stage="train cpt", inputs=("pairs",), init="mlm-8192/model"),
    Step("mine", stage="mine", inputs=("pairs",), model="cpt/model"),
    Step("trm", stage="train trm", inputs=("mine",), init="cpt/model"),
    Step("reranker", stage="train reranker", inputs=("mine",), init="mlm-8192/model"),
    Step("eval-mlm", stage="eval", model="mlm-8192/model"),
    Step("eval-cpt", stage="eval", model="cpt/model"),
    Step("eval-trm", stage="eval", model="trm/model", reranker="reranker/model"),
    Step("eval-minilm", stage="eval"),
))
