"""Loss functions of certified and adversarial training, written on margins and logits."""
