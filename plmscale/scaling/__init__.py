"""Scaling laws from a table of training runs: IsoFLOP, envelope and parametric fits with bootstrap
intervals, transfer analysis and predictions. Pure functions over pandas tables; no torch."""
