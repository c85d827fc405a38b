"""Synthetic data with ground truth (``synthetic``) and ``gpuillum demo`` (``run``): a plate with
known flat field and darkfield, corrected end to end and scored."""
