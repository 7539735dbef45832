"""Pixels and noise: image I/O, noise synthesis and estimation, metrics, training patches, file pairing. No Ray, no storage."""
