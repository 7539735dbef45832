"""raydenoise: denoise and enhance buckets of noisy or low-light photos at cluster scale."""

__version__ = "0.1.0"
