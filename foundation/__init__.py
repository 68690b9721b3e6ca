"""The foundation every layer above stands on (../shared/STYLE.md "The layers").

- :mod:`foundation.config`: typed, frozen YAML configs (`--set`, `base:`, config hash).
- :mod:`foundation.errors`: the errors the CLI turns into one line and an exit code.
- :mod:`foundation.ledger`: a stage output directory (identity, input fingerprints, the atomic writer,
  task markers and manifest, the one reader of finished outputs), one concern a module.
- :mod:`foundation.faults`: the deterministic fault hook the reliability tests use.
- :mod:`foundation.sampling`: mGTE eq. 1, the one multinomial re-weighting.
- :mod:`foundation.ray_init`: how every stage starts or joins Ray.
- :mod:`foundation.tables`: Arrow helpers (the rows of keys seen twice, for de-duplication).
- :mod:`foundation.progress`: a progress bar on a terminal, log lines (done/total, rate, time left)
  at most every 30 s elsewhere.

Nothing here imports ``pipelines``, ``training``, ``model`` or ``dags``.
"""
