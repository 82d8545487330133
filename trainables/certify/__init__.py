"""Verifiers: the registry every entry point takes its verifiers from (``verifiers``), complete
MILP / Marabou (``exact``), randomized smoothing (``smoothing``), Lipschitz margins
(``lipschitz``), and running certificates without TF32 (``precision``). Certifying a
trained checkpoint from the command line is ``python -m trainables.certify_checkpoint``."""
