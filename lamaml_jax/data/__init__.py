"""Continual-learning benchmarks as host arrays with static shapes."""
