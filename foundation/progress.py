"""Progress bars on a terminal (CONTRACT.md: "not when not a TTY"); silence everywhere else."""

from __future__ import annotations

import sys
from typing import Iterable, TypeVar

T = TypeVar("T")


def on_tty() -> bool:
    return sys.stderr.isatty()


class Progress:
    """A tqdm bar on a TTY when ``enabled`` (e.g. rank 0 only); silent otherwise."""

    def __init__(self, total: int, initial: int = 0, *, enabled: bool = True, desc: str = "train"):
        self._bar = None
        if enabled and on_tty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True)

    def update(self, n: int = 1, **postfix) -> None:
        if self._bar is None:
            return
        if postfix:
            self._bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in postfix.items()},
                                  refresh=False)
        self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def progress(items: Iterable[T], desc: str, unit: str = "batch") -> Iterable[T]:
    """A progress bar over ``items`` on a terminal, the items alone otherwise."""
    if not on_tty():
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit=unit)
