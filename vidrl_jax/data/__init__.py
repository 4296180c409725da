"""Datasets on disk: frame shards (LAPO format), collectors, window samplers."""
