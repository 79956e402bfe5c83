"""What every toxic is: a frozen dataclass of its JSON attributes plus how it changes one direction of a stream.

The link (`regions.toxiproxy.link`) feeds each chunk through the toxics in order; a toxic passes data on with
`emit`, may hold it with `stub.sleep` (which returns early, False, when the toxic is removed or updated so
that held data is forwarded instead of dropped) and ends the stream by raising `StreamClosed`.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar, Protocol, TypeVar

from regions.toxiproxy import go_json
from regions.toxiproxy.api_error import BAD_REQUEST_BODY


@dataclasses.dataclass(frozen=True, slots=True)
class Chunk:
    """Bytes read from the source and the loop time they were read (latency counts from then)."""

    data: bytes
    timestamp: float


Emit = Callable[[Chunk], Awaitable[None]]


class StreamClosed(Exception):
    """Ends one direction of a connection; `reset` closes with SO_LINGER 0 so that the peer sees a TCP RST."""

    def __init__(self, *, reset: bool = False) -> None:
        super().__init__("reset" if reset else "closed")
        self.reset = reset


class ToxicStub(Protocol):
    """One toxic on one connection's direction: Toxiproxy's ToxicStub, minus the channels."""

    state: Any
    started_at: float
    rng: random.Random

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> bool:
        """Waits; returns False early when this toxic was removed or updated meanwhile."""
        ...

    async def sleep_uninterrupted(self, seconds: float) -> None: ...


class Toxic:
    """Base of the toxic dataclasses; by default data passes through untouched."""

    __slots__ = ()
    type_name: ClassVar[str]
    # Toxiproxy's CleanupToxic: removing a toxic that dropped data closes the connections it was on.
    closes_on_removal: ClassVar[bool] = False

    def new_state(self) -> Any:
        return None

    async def pipe(self, chunk: Chunk, stub: ToxicStub, emit: Emit) -> None:
        await emit(chunk)

    async def on_eof(self, stub: ToxicStub) -> None:
        """Called when the source has closed, before the destination is closed."""

    def close_deadline(self, stub: ToxicStub) -> float | None:
        """Loop time at which this toxic closes the stream even if no data comes."""
        return None


ToxicT = TypeVar("ToxicT", bound=type[Toxic])

# Toxiproxy's attributes are Go int64s (or ints, 64 bits on its builds): a larger number does not decode.
MAX_ATTRIBUTE = 2**63 - 1

REGISTRY: dict[str, type[Toxic]] = {}


def register(cls: ToxicT) -> ToxicT:
    REGISTRY[cls.type_name] = cls
    return cls


def attributes_from_json(cls: type[Toxic], raw: object, base: Toxic | None = None) -> Toxic:
    """Builds a toxic's attributes from its JSON object, starting from `base` (update) or the defaults.

    Every Toxiproxy attribute is an integer; like Go's decoder, keys match ignoring case, unknown keys and nulls
    are ignored and non-integers rejected. Negative values are rejected too (Toxiproxy accepts them and then
    misbehaves).
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise BAD_REQUEST_BODY.joined(f"attributes: expected an object, got {type(raw).__name__}")
    values: dict[str, int] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        for value in go_json.values(raw, field.name):
            if isinstance(value, bool) or not isinstance(value, int):
                raise BAD_REQUEST_BODY.joined(
                    f"attributes.{field.name}: expected an integer for {cls.type_name}, got {value!r}")
            if value > MAX_ATTRIBUTE:
                raise BAD_REQUEST_BODY.joined(f"attributes.{field.name}: {value} overflows a 64-bit integer")
            if value < 0:
                raise BAD_REQUEST_BODY.joined(f"attributes.{field.name}: must be >= 0, got {value}")
            values[field.name] = value
    if base is not None:
        return dataclasses.replace(base, **values)  # type: ignore[type-var]
    return cls(**values)


def attributes_to_json(toxic: Toxic) -> dict[str, int]:
    return {field.name: getattr(toxic, field.name) for field in dataclasses.fields(toxic)}  # type: ignore[arg-type]

