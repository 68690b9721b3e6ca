"""The mGTE paper's numbers, read from its text (``../shared/seeds/mgte_paper.txt`` beside the
repository, or ``$MGTE_PAPER``), for the tests that check the paper configs: they compare a config
with the paper itself, never with a copy of its numbers (PAPER_FACTS.md was lossy once).

The text is the arXiv HTML as plain text: a table is its rows, one per line, just above its
``Table N:`` caption; LaTeX-rendered numbers appear several times in a row (``0.050.050.050.05``,
``1e51𝑒51e-51italic_e - 5``), so sentence facts are read from the ``\\name=value`` LaTeX source
where the rendered form is garbled. Tests skip when the text is not there.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def paper_path() -> Path:
    return Path(os.environ.get("MGTE_PAPER", REPO.parent / "shared" / "seeds" / "mgte_paper.txt"))


@functools.cache
def text() -> str:
    path = paper_path()
    if not path.is_file():
        # the README's test command runs with ../shared beside the repository (CI too): a missing paper
        # is a broken checkout, not a reason to pass the paper-config tests unchecked
        pytest.fail(f"the mGTE paper's text is not at {path} (../shared/seeds beside the repository, or set "
                    "MGTE_PAPER)", pytrace=False)
    return path.read_text(encoding="utf-8")


def table_rows(number: int) -> list[str]:
    """The lines of Table ``number``: from its caption up to the previous blank line."""
    lines = text().splitlines()
    caption = next(i for i, line in enumerate(lines) if line.startswith(f"Table {number}:"))
    start = caption
    while start > 0 and lines[start - 1].strip():
        start -= 1
    return lines[start:caption]


def _number(token: str) -> float | None:
    try:
        return float(token.replace(",", ""))
    except ValueError:
        return None


def table12() -> list[dict]:
    """Table 12 (B.3/B.4), batch size (BS) and sub-batch size (S-BS) by length for the embedder (E)
    and the reranker (R): ``[{"lo", "hi", "bs_e", "sbs_e", "bs_r", "sbs_r"}]``.

    The text's header line reads ``length BS(E) S-BS(R) BS(E) S-BS(R)`` (garbled in extraction);
    the caption says the columns are BS and S-BS of E, then of R, which is the order used here.
    """
    rows = []
    for line in table_rows(12)[1:]:
        span, *values = line.split()
        lo, hi = (int(x) for x in span.split("-"))
        bs_e, sbs_e, bs_r, sbs_r = (int(v) for v in values)
        rows.append(dict(lo=lo, hi=hi, bs_e=bs_e, sbs_e=sbs_e, bs_r=bs_r, sbs_r=sbs_r))
    return rows


def table8() -> dict[str, tuple[float | str, float | str]]:
    """Table 8 (MLM pre-training): hyper-parameter name -> (MLM-2048, MLM-8192); a row with one
    value holds for both. Names are the text's, up to the first LaTeX residue (``Adam β2``)."""
    out = {}
    for line in table_rows(8)[1:]:
        tokens = line.split()
        values: list[float | str] = []
        while tokens and _number(tokens[-1]) is not None and len(values) < 2:
            values.insert(0, _number(tokens.pop()))
        name = " ".join(tokens)
        name = re.sub(r"(Adam (?:ϵ|β\d)).*", r"\1", name)
        if not values:  # a text value (Learning Rate Decay Linear, Precision PyTorch BF16 AMP)
            name, value = " ".join(tokens[:-1]), tokens[-1]  # Number of Params 304M
            for key in ("Learning Rate Decay", "Precision"):
                if line.startswith(key):
                    name, value = key, line[len(key):].strip()
            values = [value]
        out[name] = (values[0], values[-1])
    return out


def section(title: str, end: str) -> str:
    """The text from the first line that is exactly ``title`` to the next line that is ``end``."""
    lines = text().splitlines()
    start = lines.index(title)
    stop = lines.index(end, start + 1)
    return "\n".join(lines[start:stop])


def unrepeat(token: str) -> str:
    """``0.050.050.050.05`` -> ``0.05``: a rendered LaTeX number repeated k times."""
    for k in (4, 3, 2):
        if len(token) % k == 0 and token == token[:len(token) // k] * k:
            return token[:len(token) // k]
    return token


def find(pattern: str, where: str | None = None) -> tuple[str, ...]:
    """The groups of the one match of ``pattern`` in ``where`` (default: the whole text)."""
    hits = re.findall(pattern, text() if where is None else where)
    assert len(hits) == 1, f"the paper text has {len(hits)} matches of {pattern!r}"
    return hits[0] if isinstance(hits[0], tuple) else (hits[0],)


def assert_b3_training_settings(loop, b3: str) -> None:
    """A TRM or reranker ``loop`` config against B.3's CPT settings ("all other hyper-parameters remain
    consistent with contrastive pre-training"): lr, schedule, warm-up, Adam betas and eps, clipping,
    FP16, DeepSpeed's ZeRO stage."""
    o = loop.optim
    assert o.lr == float(find(r"learning rate (\S+), linear decay", b3)[0]) and o.schedule == "linear"
    assert o.warmup_ratio == float(find(r"warm-up ratio (\S+)\.", b3)[0])
    assert o.betas == (float(find(r"\\beta_\{1\}=([0-9.]+)", b3)[0]),
                       float(find(r"\\beta_\{2\}=([0-9.]+)", b3)[0]))
    assert o.eps == float(find(r"\\epsilon=([0-9.e-]+?)italic", b3)[0])
    assert o.max_grad_norm == float(find(r"gradient clipping to (\d+\.\d+)", b3)[0])
    assert loop.precision == find(r"in (FP16) precision", b3)[0].lower()
    assert loop.deepspeed.enabled and loop.deepspeed.zero_stage == int(find(r"ZeRO .{0,60}stage (\d)", b3)[0])
