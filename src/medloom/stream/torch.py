"""The torch side of `medloom.stream`: kept apart so that torch is imported only by those who use it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from torch.utils.data import IterableDataset


class Epochs(Protocol):
    """What a `medloom.stream.Stream` offers: its samples, and a new order per epoch."""

    def __iter__(self) -> Iterator[Any]: ...

    def set_epoch(self, epoch: int) -> None: ...


class TorchStream(IterableDataset):
    """A `Stream` as an IterableDataset; each DataLoader worker and rank reads disjoint shards."""

    def __init__(self, stream: Epochs):
        super().__init__()
        self.stream = stream

    def set_epoch(self, epoch: int) -> None:
        self.stream.set_epoch(epoch)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.stream)
