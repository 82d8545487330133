"""Settings for the whole test session.

Every test network is tiny: one intra-op thread runs it faster than several threads that
fight over the CI machine's two cores (up to ~15x for the attacks), and Ray's workers and
subprocesses inherit the setting through OMP_NUM_THREADS.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

torch.set_num_threads(1)
