"""Verifiers used for evaluation: complete MILP / Marabou (``exact``), randomized smoothing
(``smoothing``), Lipschitz margins (``lipschitz``), and one dispatch over them and the bounds
and attacks (``dispatch.certify``, the ``python -m trainables.certify`` command)."""
