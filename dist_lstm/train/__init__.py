"""Training: one run's parts assembled (run.py), the loop (trainer.py), its limits and
early stopping (stopping.py), stop signals (signals.py), optimizer and LR schedule
(optim.py)."""
