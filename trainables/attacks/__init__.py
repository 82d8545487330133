"""Empirical attacks (PGD) used for training and evaluation."""

from trainables.attacks.pgd import pgd_minimize

__all__ = ["pgd_minimize"]
