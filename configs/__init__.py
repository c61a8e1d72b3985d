"""Config files, one per method: `configs/<method>.py` defines `get_config(arg)`."""
import importlib


def get_config(method: str, arg: str = ""):
  """`configs/<method>.py`'s config for arg 'dataset[,setting[,source]]'."""
  try:
    module = importlib.import_module(f"configs.{method}")
  except ModuleNotFoundError:
    raise ValueError(f"No config file configs/{method}.py for method {method!r}.") from None
  return module.get_config(arg) if arg else module.get_config()


def has_cell(method: str, dataset: str) -> bool:
  """Whether configs/<method>.py has a cell on `dataset` (iCaRL has none on the
  single-head MNIST streams)."""
  cells = importlib.import_module(f"configs.{method}").CELLS
  return any(d == dataset for d, _ in cells.datasets())
