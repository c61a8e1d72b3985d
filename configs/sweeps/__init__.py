"""Sweep descriptions (`lamaml_jax/sweep.py`): methods x datasets x settings,
each cell one run of seeds x grid members; run locally with
`python -m lamaml_jax.sweep --sweep=configs/sweeps/<name>.py --workdir=DIR` or
on a cluster with `python -m launch.slurm --sweep=...`."""
