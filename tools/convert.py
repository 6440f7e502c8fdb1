#!/usr/bin/env python3
"""Seal the initializers of an ONNX model: a thin wrapper of ``ortseal seal``.

    python tools/convert.py SRC -o DST --keys KEYS [--min-bytes N] [--include REGEX] [--exclude REGEX]
        [--model-name NAME] [--release N] [--no-sign]
"""

import sys

from ortseal.cli import main

if __name__ == "__main__":
    main(["seal", *sys.argv[1:]], prog_name="tools/convert.py")
