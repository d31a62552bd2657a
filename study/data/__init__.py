"""Data: declared datasets, synthetic generator, SimpleITK loader, splits, patch sampling."""
