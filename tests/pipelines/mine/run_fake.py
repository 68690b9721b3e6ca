"""Run `mgte mine` with the fake embedder in a subprocess (the kill tests): ``python -m
tests.pipelines.mine.run_fake CONFIG.json``."""

import json
import sys

if __name__ == "__main__":
    import pipelines.embedding.resolve as resolve
    import pipelines.mine.encode as encode
    from foundation.config import load_config
    from pipelines import mine
    from tests.pipelines.mine.conftest import FakeEmbedder

    encode.load_model = lambda *a, **k: FakeEmbedder()
    encode.model_identity = lambda model: {"model": model, "dir": "-", "kind": "fake", "fingerprint": "0"}
    resolve.check_models = lambda refs, verify=True: {}  # "fake" names no directory
    mine.run(load_config(mine.Config, None, data=json.loads(open(sys.argv[1]).read())))
