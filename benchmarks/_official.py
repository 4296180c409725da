"""The official-code columns of `aime_steps.py` and `lapo_steps.py`, from a results file of the same sitting.

../shared/official-timing times the official PyTorch steps (`run_all.sh OUTDIR`, or `lapo_bench.py` /
`aime_bench.py` with RESULT_FILE set) and writes one JSON object per line: a case's line has `case` and `median_ms`,
run_all.sh's peak-RSS lines have neither. A script given that file as `--official=PATH` adds two columns, the
official median ms per step and official / ours (> 1: ours faster); without it, no official number is printed (a
number from another day does not compare on these noisy machines).
"""

from __future__ import annotations

import json
import os
import time

COLUMNS = " official ms | official / ours |"
RULE = "---|---|"


def read(path: str, prefix: str) -> dict[str, float]:
  """{case: median ms}; `prefix` ("aime_", "lapo_") is dropped from the case names, the lines without `case` and
  `median_ms` are skipped, and a case timed more than once keeps its last line."""
  out = {}
  with open(path) as f:
    for line in f:
      row = json.loads(line) if line.strip() else {}
      if "case" in row and "median_ms" in row:
        case = row["case"][len(prefix):] if row["case"].startswith(prefix) else row["case"]
        out[case] = float(row["median_ms"])
  return out


def header(path: str, official: dict[str, float]) -> str:
  """The line naming the file, when it was written and its cases."""
  written = time.strftime("%Y-%m-%d %H:%M", time.localtime(os.path.getmtime(path)))
  return f"official: {path} (written {written}; cases {', '.join(sorted(official)) or 'none'})"


def cells(official_ms: float | None, ours_ms: float, why: str) -> str:
  """The two cells of a row: the official ms and the ratio, or '-' with `why` there is no comparable case."""
  if official_ms is None:
    return f" - ({why}) | - |"
  return f" {official_ms:,.0f} | {official_ms / ours_ms:.2f}x |"
