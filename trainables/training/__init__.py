"""The certified training loop (Ray-free): the step, the distiller, optimiser, checkpoints,
DDP, callbacks. The training methods themselves are ``trainables.methods``."""
