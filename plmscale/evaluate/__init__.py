"""Evaluation of trained runs beyond their loss: what a CLM generates (generation.py) and, on the demo corpus,
how much of the planted content its samples carry (motifs.py)."""
