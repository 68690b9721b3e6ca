"""The whole mGTE build: raw corpus -> ... -> evaluation. Wiring only (see dags/configs/full/)."""

from dags.dag import Dag, Step

DAG = Dag("full", (
    Step("corpus", stage="corpus"),
))
