"""Training on a loom: a CLIP-style model with locked towers and trained projections."""
