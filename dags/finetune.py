"""Fine-tune any encoder on labelled retrieval sets. Wiring only; configs in dags/configs/finetune/.

The start model is the DAG variable ``init`` (``--set init=MODEL``: a Hugging Face or
sentence-transformers encoder, or one of ours), used by the steps' configs as ``${init}``:
mine (the sets' train splits, negatives mined with the start model itself) -> trm (from the start
model) and reranker (from the start model) -> eval on each set's held-out split of the start model
and of the TRM (dense, sparse, hybrid) with the reranker on its hybrid list, in one comparison page.
"""

from dags.dag import Dag, Step

DAG = Dag("finetune", (
    Step("mine", stage="mine"),
    Step("trm", stage="train trm", inputs=("mine",)),
    Step("reranker", stage="train reranker", inputs=("mine",)),
    Step("eval-start-qa", stage="eval"),
    Step("eval-finetuned-qa", stage="eval", model="trm/model", reranker="reranker/model"),
    Step("eval-start-docstrings", stage="eval"),
    Step("eval-finetuned-docstrings", stage="eval", model="trm/model", reranker="reranker/model"),
))
