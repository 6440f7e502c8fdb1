"""Regenerate the keyset and sealed-model vectors: python tests/vectors/generate_model_vectors.py

- keyset_v1.json / keyset_v1_wrapped.json: the vector keys (generate_blob_vectors.py), plain and wrapped
  with the passphrase "ortseal vector passphrase" (scrypt salt and nonce are random: the file is the vector).
- keyset_v1_public_scoped.json: the vector signing key as a device would trust it, scoped to "model:mul_*".
- mul_1.sealed.onnx (+ .data): onnxruntime.datasets/mul_1.onnx sealed with those keys (model "mul_1",
  release 1), model format v3. Sealed models must keep opening: tests/test_vectors.py checks its manifest and
  outputs, and opens it with a second implementation written from docs/format.md alone.
- fail_v1_mul_1.sealed.onnx, fail_v2_mul_1.sealed.onnx: the same model sealed by model formats v1 and v2 (kept
  from those versions, not regenerated), which must be refused with the re-seal command.
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
    (HERE / "keyset_v1_public_scoped.json").write_text(keys.public(scope=["model:mul_*"]).to_json())
    ortseal.seal_model(onnxruntime.datasets.get_example("mul_1.onnx"), HERE / "mul_1.sealed.onnx", keys, min_bytes=1,
                       release=1, overwrite=True)
    print(f"wrote keyset and sealed-model vectors in {HERE}")


if __name__ == "__main__":
    main()
