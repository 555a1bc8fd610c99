"""Progress of long work, the way its reader sees it: a tqdm bar on a terminal, a plain line every
`interval` seconds when the output goes to a file (a log on a cluster), never carriage-return spam."""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO


class Progress:
    """Counts work done out of `total`. `describe(done, total, seconds)` makes the text of a plain line
    (without the leading description); the bar shows its own counts and the postfix."""

    def __init__(self, total: float | None, desc: str, unit: str = "it", unit_scale: bool = False,
                 describe: Callable[[float, float | None, float], str] | None = None,
                 stream: TextIO | None = None, interval: float = 10.0, enabled: bool = True):
        self.stream = stream or sys.stderr
        self.total, self.desc, self.interval, self.enabled = total, desc, interval, enabled
        self.describe = describe or (lambda done, total, s: f"{done:,.0f}" + (f"/{total:,.0f}" if total else ""))
        self.done, self.t0 = 0.0, time.perf_counter()
        self.last_line = self.t0
        self.bar = None
        if enabled and self.stream.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=unit_scale, file=self.stream,
                            dynamic_ncols=True)

    def update(self, n: float, **postfix) -> None:
        self.done += n
        if self.bar is not None:
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(n)
        elif self.enabled and time.perf_counter() - self.last_line >= self.interval:
            self.last_line = time.perf_counter()
            self.line()

    def line(self) -> None:
        print(f"{self.desc}: {self.describe(self.done, self.total, time.perf_counter() - self.t0)}",
              file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
