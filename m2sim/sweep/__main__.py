"""``python -m m2sim.sweep DIR``: gather a sweep directory into DIR/results.{parquet,csv}."""

from __future__ import annotations

import argparse
import sys

from m2sim.sweep.job import IncompatibleResults
from m2sim.sweep.table import write_table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m m2sim.sweep", description=__doc__)
    ap.add_argument("sweep_dir", help="a hydra.sweep.dir written by `m2sim -m`")
    args = ap.parse_args(argv)
    try:
        df, path = write_table(args.sweep_dir)
    except IncompatibleResults as e:
        print(f"m2sim: error: {e}", file=sys.stderr)
        return 2
    counts = df.drop_duplicates("job").status.value_counts().to_dict()
    print(f"{df.job.nunique()} jobs {counts} -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
