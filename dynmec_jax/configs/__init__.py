"""ml_collections configs; select with ``--config=dynmec_jax/configs/NAME.py:PRESET``."""
