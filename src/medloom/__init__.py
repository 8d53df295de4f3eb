"""medloom: curated, MAT-tagged multimodal medical datasets from public collections and literature."""

__version__ = "0.1.0"


def load(*args, **kwargs):
    """Stream samples from an export folder, shards or URLs; see `medloom.stream.load`."""
    from .stream import load as _load

    return _load(*args, **kwargs)
