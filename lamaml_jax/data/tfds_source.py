"""Reads prepared TFDS datasets into NumPy without TensorFlow.

Data are read with `builder.as_data_source` (array_record files, random access,
no TensorFlow). Builders are constructed from their classes, never looked up by
name, so no registry or bucket is consulted. Before anything could touch the
network, `load_split` checks whether the data are prepared under `data_dir`; if
not, it prepares them when the builder's download host answers within seconds
and otherwise raises `DataNotFoundError` with the command that prepares them
elsewhere (`python -m lamaml_jax.data.prepare`).
"""
from __future__ import annotations

import os
import socket
import threading
import urllib.parse
import urllib.request
from typing import Optional, Sequence

import numpy as np
import tensorflow_datasets as tfds

ARRAY_RECORD = "array_record"
NETWORK_TIMEOUT_S = 3.0


class DataNotFoundError(ValueError):
  """The dataset is not prepared under data_dir and cannot be prepared here."""


def make_builder(builder_cls, data_dir: Optional[str] = None):
  """`builder_cls` under data_dir (None: TFDS_DATA_DIR or ~/tensorflow_datasets).

  The file format is not forced here: data already on disk keep theirs (reading
  checks for array_record); `prepare` writes array_record.
  """
  return builder_cls(data_dir=data_dir)


def network_reachable(urls: Sequence[str], timeout: float = NETWORK_TIMEOUT_S) -> bool:
  """Whether a TCP connection to the first URL's host (or proxy) opens in `timeout` s.

  DNS resolution is included in the time limit (it runs in a daemon thread).
  """
  if not urls:
    return False
  url = urllib.parse.urlsplit(urls[0])
  proxy = urllib.request.getproxies().get(url.scheme)
  target = urllib.parse.urlsplit(proxy) if proxy else url
  host = target.hostname
  port = target.port or (443 if target.scheme == "https" else 80)
  if not host:
    return False
  result = []

  def connect():
    try:
      with socket.create_connection((host, port), timeout=timeout):
        result.append(True)
    except OSError:
      pass

  thread = threading.Thread(target=connect, daemon=True)
  thread.start()
  thread.join(timeout)
  return bool(result)


def prepare_command(dataset: str, data_dir: str = "DATA_DIR") -> str:
  return (f"python -m lamaml_jax.data.prepare --dataset={dataset} "
          f"--data_dir={data_dir}")


def prepare(builder, *, manual_dir: Optional[str] = None) -> None:
  """Downloads (or reads from manual_dir) and writes array_record files."""
  config = tfds.download.DownloadConfig(manual_dir=manual_dir,
                                        try_download_gcs=False)
  builder.download_and_prepare(file_format=ARRAY_RECORD, download_config=config)


def _not_found(builder, dataset: str, why: str, manual: bool = False):
  root = os.fspath(builder.data_dir_root)
  where = ("On a machine that has the archive" if manual
           else "On a machine with network access")
  return DataNotFoundError(
      f"{dataset}: no prepared array_record data at {builder.data_path} ({why}).\n"
      f"{where}, run\n    {prepare_command(dataset)}\n"
      f"then copy the folder DATA_DIR/{builder.name} to {root}/{builder.name} on "
      f"this machine, or into any FOLDER and pass --data_dir=FOLDER "
      f"(make_benchmark(..., data_dir=FOLDER)) or set TFDS_DATA_DIR=FOLDER. "
      f"Neither step needs TensorFlow.")


def ensure_prepared(builder, *, dataset: str,
                    urls: Sequence[str] = (),
                    manual_dir: Optional[str] = None) -> None:
  """Prepares `builder` if needed; raises DataNotFoundError fast when impossible.

  Args:
    builder: a TFDS builder made by `make_builder`.
    dataset: name for `python -m lamaml_jax.data.prepare --dataset=...`.
    urls: the builder's download URLs; empty for manual-download datasets.
    manual_dir: where manual downloads live (default DATA_DIR/downloads/manual).
  """
  if builder.is_prepared():
    formats = {f.value for f in builder.info.available_file_formats()}
    if ARRAY_RECORD not in formats:
      raise _not_found(builder, dataset, f"the data there are stored as "
                       f"{sorted(formats)}, which needs TensorFlow; delete that "
                       "folder and prepare it again (array_record)")
    return
  if urls:
    if not network_reachable(urls):
      host = urllib.parse.urlsplit(urls[0]).hostname
      raise _not_found(builder, dataset, f"not prepared, and {host} is unreachable "
                       "from this machine")
    prepare(builder)
    return
  manual = manual_dir or os.path.join(os.fspath(builder.data_dir_root),
                                      "downloads", "manual")
  if not os.path.isdir(manual) or not os.listdir(manual):
    raise _not_found(builder, dataset, f"not prepared, and the manual download "
                     f"folder {manual} is missing or empty: "
                     f"{' '.join(builder.MANUAL_DOWNLOAD_INSTRUCTIONS.split())}",
                     manual=True)
  prepare(builder, manual_dir=manual)


def _get_records(source, keys: list[int]) -> list:
  try:
    return source.__getitems__(keys)  # batched reads: about 2x faster
  except TypeError:  # tfds.testing.mock_data's data source has only __getitem__.
    return [source[i] for i in keys]


def read_arrays(source, keys: Sequence[str] = ("image", "label"),
                chunk: int = 4096) -> dict[str, np.ndarray]:
  """Stacks the features `keys` of every record of a data source: {key: [N, ...]}."""
  parts = {k: [] for k in keys}
  for start in range(0, len(source), chunk):
    records = _get_records(source, list(range(start, min(len(source), start + chunk))))
    for k in keys:
      parts[k].append(np.stack([np.asarray(r[k]) for r in records]))
  if not parts[keys[0]]:
    raise DataNotFoundError(f"Data source {source!r} is empty.")
  return {k: np.concatenate(v) for k, v in parts.items()}


def load_split(builder_cls, split: str, *, dataset: str,
               data_dir: Optional[str] = None, urls: Sequence[str] = (),
               keys: Sequence[str] = ("image", "label"),
               manual_dir: Optional[str] = None) -> dict[str, np.ndarray]:
  """Prepared split `split` of `builder_cls` as NumPy arrays {key: [N, ...]}."""
  builder = make_builder(builder_cls, data_dir)
  ensure_prepared(builder, dataset=dataset, urls=urls, manual_dir=manual_dir)
  source = builder.as_data_source(split=split)
  return read_arrays(source, keys)
