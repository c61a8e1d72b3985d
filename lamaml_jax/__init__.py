"""lamaml_jax: La-MAML (Gupta, Yadav & Paull, NeurIPS 2020) and its baselines in JAX."""

__version__ = "0.1.0"
