"""Backend dispatch shared by every public op.

Each op owns a :class:`Dispatcher` with an ordered list of :class:`Backend` s, fastest first.
A backend says *why* it cannot take an input (``reasons(**inputs) -> list[str]``); an empty
list means it can. ``backend="auto"`` takes the first backend with no reasons; a named backend
that cannot run raises ``ValueError`` with its reasons; when no backend can run, the error
lists every backend and why it was rejected (in the style of xformers' dispatcher).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

#: op name -> Dispatcher, filled as op modules are imported (used by ``python -m slpfast.info``).
REGISTRY: dict[str, "Dispatcher"] = {}


@dataclass
class Backend:
    """One implementation of an op.

    ``available()`` returns reasons that hold for any input on this machine (missing package,
    no GPU, extension not built); ``supports(**inputs)`` returns reasons specific to an input.
    ``run(**inputs)`` computes the op.
    """

    name: str
    run: Callable[..., Any]
    available: Callable[[], list[str]] = field(default=lambda: [])
    supports: Callable[..., list[str]] = field(default=lambda **_: [])

    def reasons(self, **inputs) -> list[str]:
        why = list(self.available())
        if not why:
            why = list(self.supports(**inputs))
        return why


class Dispatcher:
    """Ordered backends of one op; see the module docstring for the selection rules."""

    def __init__(self, op_name: str, backends: list[Backend]):
        self.op_name = op_name
        self.backends = {b.name: b for b in backends}
        REGISTRY[op_name] = self

    def names(self) -> list[str]:
        return list(self.backends)

    def select(self, backend: str, **inputs) -> Backend:
        """Return the backend that will run ``inputs`` (see module docstring for the rules)."""
        if backend != "auto":
            if backend not in self.backends:
                raise ValueError(
                    f"{self.op_name}: backend must be 'auto' or one of {self.names()}, got {backend!r}"
                )
            chosen = self.backends[backend]
            why = chosen.reasons(**inputs)
            if why:
                raise ValueError(f"{self.op_name}: backend {backend!r} cannot run this input: " + "; ".join(why))
            return chosen
        rejected = []
        for b in self.backends.values():
            why = b.reasons(**inputs)
            if not why:
                return b
            rejected.append(f"  `{b.name}` is not supported because:\n" + "\n".join(f"    {w}" for w in why))
        raise NotImplementedError(f"{self.op_name}: no backend can run this input.\n" + "\n".join(rejected))

    def machine_report(self) -> dict[str, list[str]]:
        """Backend name -> reasons it cannot run on this machine at all (empty: it can)."""
        return {name: list(b.available()) for name, b in self.backends.items()}
