"""Regenerate the keyset and sealed-model vectors: python tests/vectors/generate_model_vectors.py

- keyset_v1.json / keyset_v1_wrapped.json: the vector keys (generate_blob_vectors.py), plain and wrapped
  with the passphrase "ortseal vector passphrase" (scrypt salt and nonce are random: the file is the vector).
- mul_1.sealed.onnx (+ .data): onnxruntime.datasets/mul_1.onnx sealed with those keys. Old sealed models must
  keep opening: tests/test_vectors.py checks this one's graph digest and outputs.
"""

from __future__ import annotations

from pathlib import Path

import onnxruntime.datasets
from generate_blob_vectors import keyset

import ortseal

HERE = Path(__file__).parent
PASSPHRASE = "ortseal vector passphrase"


def main() -> None:
    keys = keyset()
    (HERE / "keyset_v1.json").write_text(keys.to_json())
    (HERE / "keyset_v1_wrapped.json").write_text(keys.to_json(PASSPHRASE))
    ortseal.seal_model(onnxruntime.datasets.get_example("mul_1.onnx"), HERE / "mul_1.sealed.onnx", keys, min_bytes=1)
    print(f"wrote keyset and sealed-model vectors in {HERE}")


if __name__ == "__main__":
    main()
