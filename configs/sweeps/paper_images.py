r"""Every method of the paper's Table 3 on CIFAR-100 and TinyImageNet, both
settings, 5 seeds (downloads and prepares the data through TFDS; a cluster job):

  python -m launch.slurm --sweep=configs/sweeps/paper_images.py \
      --runs=runs/paper_images --gpus=1 --hours=24 --dry_run
"""
from lamaml_jax import sweep


def get_config():
  return sweep.description(
      methods="lamaml,cmaml,sync,laer,er,mer,gem,agem,icarl,meta_bgd,iid",
      datasets="cifar100,tinyimagenet",
      settings="single_pass,multi_pass",
      seeds="0-4")
