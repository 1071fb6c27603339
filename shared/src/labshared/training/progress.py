"""One progress display for every trainer and every long loop.

On a terminal it is rich's bar (the columns of `labshared.console.make_progress`). Off a
terminal (a CI log, `2> log.txt`, a cluster's output file) it prints one timestamped line
every `every` seconds, with the rate and an ETA, so a log shows where a run stands
without a bar's control characters. A `label` prefixes each line: two runs writing to one
log (the demos train two models) stay apart.
"""

from __future__ import annotations

import time

from labshared.console import log, make_progress, progress_enabled


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class StepProgress:
    """Progress of a loop of `total` units (steps, batches, images), from `start`.

    Args:
        total: units in the whole run.
        start: units already done (a resumed run).
        label: what runs ("rtd train", "ERM", "seed 1 none"); starts every line.
        unit: what a unit is ("step", "batch", "img").
        every: seconds between two plain lines off a terminal.
        clock: the time source (tests pass a fake one).
    """

    def __init__(
        self,
        total: int,
        start: int = 0,
        *,
        label: str = "train",
        unit: str = "step",
        every: float = 10.0,
        clock=time.monotonic,
    ) -> None:
        self.total, self.done, self.start = total, start, start
        self.label, self.unit, self.every, self.clock = label, unit, every, clock
        self.bar = make_progress() if progress_enabled() else None
        self._task = None
        self._t0 = self._last = 0.0

    def __enter__(self) -> StepProgress:
        self._t0 = self._last = self.clock()
        if self.bar is not None:
            self.bar.__enter__()
            self._task = self.bar.add_task(self.label, total=self.total, completed=self.done,
                                           status="")  # fmt: skip
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def line(self, status: str = "") -> str:
        """The plain progress line as it stands now."""
        elapsed = self.clock() - self._t0
        rate = (self.done - self.start) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        pct = 100.0 * self.done / max(self.total, 1)
        stamp = time.strftime("%H:%M:%S")
        eta_text = _duration(eta) if eta == eta else "?"
        return (f"[{stamp}] {self.label} {self.unit} {self.done}/{self.total} ({pct:.1f}%) "
                f"{rate:.3g} {self.unit}/s ETA {eta_text} {status}").rstrip()  # fmt: skip

    def update(self, done: int, status: str = "") -> None:
        """Set the units done; draws the bar, or prints a line when `every` has passed
        (and always at the last unit)."""
        self.done = done
        if self.bar is not None:
            self.bar.update(self._task, completed=done, status=status)
            return
        now = self.clock()
        if now - self._last >= self.every or done >= self.total:
            self._last = now
            log(self.line(status), highlight=False, soft_wrap=True)
