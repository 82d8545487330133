"""Verifiers used for evaluation (exact MILP now; smoothing, Lipschitz and attacks later)."""
