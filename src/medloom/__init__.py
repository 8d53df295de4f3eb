"""medloom: curated, MAT-tagged multimodal medical datasets from public collections and literature."""

from .version import __version__

__all__ = ["__version__", "load"]


def load(*args, **kwargs):
    """Stream samples from an export folder, shards or URLs; see `medloom.stream.load`."""
    from .stream import load as _load

    return _load(*args, **kwargs)
