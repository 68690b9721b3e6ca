"""Restartable, accountable stage outputs, one concern a module:

- :mod:`.identity`  the config hash (run-only keys left out), task names by input content, code version
- :mod:`.inputs`    input files by content (``{path, size, fingerprint}``) and input-set changes
- :mod:`.atomic`    the one atomic writer (tmp in the destination, fsync, fault point, rename)
- :mod:`.output`    :class:`StageOutput`: config and input pinning, task markers, manifest, ``_SUCCESS``
- :mod:`.lock`      one writer per output: an exclusive lock beside it, stale ones taken over
- :mod:`.readers`   the one reader of finished outputs and the one "is this a stage output of kind K" check

The names below are the public ones; ``from foundation.ledger import X`` is how code uses them.
"""

from foundation.ledger.atomic import (
    atomic_write, atomic_write_arrow, atomic_write_bytes, atomic_write_json, atomic_write_npy, atomic_write_parquet,
)
from foundation.ledger.identity import RUN_ONLY_KEYS, code_version, deps_hash, identity_hash, input_task, now
from foundation.ledger.inputs import FINGERPRINT_EDGE, InputChange, describe_input, describe_inputs, diff_inputs
from foundation.ledger.lock import OutputLocked, output_lock
from foundation.ledger.output import EMPTY_COUNTS, StageOutput, sum_counts
from foundation.ledger.readers import (
    is_finished, is_stage_output, read_manifest, read_stage_output, stage_output, stage_output_files,
)

__all__ = [
    "EMPTY_COUNTS", "FINGERPRINT_EDGE", "RUN_ONLY_KEYS", "InputChange", "OutputLocked", "StageOutput", "atomic_write",
    "atomic_write_arrow", "atomic_write_bytes", "atomic_write_json", "atomic_write_npy", "atomic_write_parquet",
    "code_version", "deps_hash", "describe_input", "describe_inputs", "diff_inputs", "identity_hash", "input_task",
    "is_finished", "is_stage_output", "now", "output_lock", "read_manifest", "read_stage_output", "stage_output", "stage_output_files",
    "sum_counts",
]
