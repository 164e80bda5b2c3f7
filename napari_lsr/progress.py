"""Terminal progress lines for the command line and the demo (stderr; no GUI, no torch)."""

from __future__ import annotations

import math
import sys
import time
from typing import Any


class Progress:
    """A plain progress line on stderr: redrawn in a terminal, every 10 % otherwise."""

    def __init__(self, label: str, stream: Any = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.last_decile = -1
        self.t0 = time.perf_counter()

    def __call__(self, what: str, frac: float, extra: str = "") -> None:
        frac = min(max(frac, 0.0), 1.0)
        pct = int(frac * 100)
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / frac - elapsed if frac > 0 else math.nan
        bar = "#" * (pct // 5) + "-" * (20 - pct // 5)
        msg = f"{self.label}: {what} [{bar}] {pct:3d}%"
        if extra:
            msg += f" {extra}"
        if frac < 1 and math.isfinite(eta):
            msg += f" eta {eta:4.0f}s"
        if self.tty:
            self.stream.write("\r" + msg[:150].ljust(150))
            if frac >= 1:
                self.stream.write("\n")
            self.stream.flush()
        elif pct // 10 != self.last_decile or frac >= 1:
            self.last_decile = pct // 10
            self.stream.write(msg + "\n")
            self.stream.flush()
