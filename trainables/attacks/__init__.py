"""Empirical attacks (PGD) used for training and evaluation."""

from trainables.attacks.classification import linf_box, pgd_attack, pgd_robust, true_class_margin
from trainables.attacks.pgd import pgd_minimize

__all__ = ["linf_box", "pgd_attack", "pgd_minimize", "pgd_robust", "true_class_margin"]
