"""medloom: curated, MAT-tagged multimodal medical datasets from public collections and literature."""

__version__ = "0.1.0"
