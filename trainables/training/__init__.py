"""The certified training loop (Ray-free): methods, checkpoints, DDP, callbacks."""
