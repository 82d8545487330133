"""The ``--method`` choices of ``python -m trainables.certify_checkpoint``.

Light on purpose (the registry's names only): the command's parser reads them without
importing torch.
"""

from __future__ import annotations

from trainables.certify.verifiers import VERIFIERS

#: Attacks: empirical robust accuracy (an upper bound of the truth), not certificates.
EMPIRICAL: tuple[str, ...] = ("pgd", "autoattack")
#: Every method: the registry's verifiers, randomized smoothing and the attacks.
METHODS: tuple[str, ...] = (*VERIFIERS, "smoothing", *EMPIRICAL)
DEFAULT_RADII: tuple[float, ...] = (0.25, 0.5, 1.0)
