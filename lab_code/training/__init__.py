"""The training side: synthetic data, the network, training, export, staging into the registry,
and judging a model (held-out sets, the real-world set, Tesseract beside it). Production never
imports it: only files cross over. `python -m lab_code.training` lists its commands."""
