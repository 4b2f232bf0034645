"""The periodic events of a training run (a log row, an FID evaluation, a checkpoint, a grid).
After every update the loop asks each event, in order, whether it is `due` and `fire`s it."""
from __future__ import annotations

from typing import Callable


class Periodic:
    """`fire()` every `every` steps (0: never). `at_end` / `when_stopping`: True makes the event
    due on the run's last step / once the run is stopping (a signal, stop_at), False never then,
    None leaves it to the period; stopping decides before the last step. `also(step)`: one more
    reason to be due."""

    def __init__(self, name: str, every: int | None, fire: Callable[[], object], at_end: bool | None = None,
                 when_stopping: bool | None = None, also: Callable[[int], bool] | None = None):
        self.name, self.every, self.fire = name, int(every or 0), fire
        self.at_end, self.when_stopping, self.also = at_end, when_stopping, also

    def due(self, step: int, last: bool, stopping: bool) -> bool:
        if not self.every:
            return False
        if stopping and self.when_stopping is not None:
            return self.when_stopping
        if last and self.at_end is not None:
            return self.at_end
        return step % self.every == 0 or (self.also is not None and self.also(step))

    def __repr__(self):
        return f"Periodic({self.name!r}, every={self.every})"
