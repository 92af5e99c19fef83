"""NeurMAP's loss terms (paper eq. 4-12) as small functions, and the per-network objectives."""
