#!/usr/bin/env python3
"""Seal the initializers of an ONNX model: ``ortseal seal`` under another name.

    python tools/convert.py SRC -o DST --keys KEYS [--min-bytes N] [--include REGEX] [--exclude REGEX]
        [--model-name NAME] [--release N] [--no-sign]
"""

import sys

from ortseal.cli.model import seal

if __name__ == "__main__":
    seal.main(sys.argv[1:], prog_name="tools/convert.py")  # behind the ortseal error boundary, as in ortseal seal
