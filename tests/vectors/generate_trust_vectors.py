"""Regenerate tests/vectors/trust_v1.json: python tests/vectors/generate_trust_vectors.py

Keys are fixed seeds (Ed25519 signatures are deterministic), so the file is reproducible byte for byte.
Each case is a sequence of bundle files installed in order on one device pinned to ROOT_1 with no state;
``accept`` lists, for each step, the serial accepted or the error refusing it (the state is unchanged by a
refusal). Every ``fail_*`` case is named after the rule of docs/format.md ("Trust bundle v1") it breaks.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ortseal.signing import KeySigner
from ortseal.trust import SIGNATURE_LABEL, TrustBundle

SEEDS = {name: bytes([i]) * 32 for i, name in enumerate(["root_1", "root_2", "signer_a", "signer_b", "intruder"], 1)}
KEYS = {name: KeySigner(Ed25519PrivateKey.from_private_bytes(seed)) for name, seed in SEEDS.items()}


def _pub(name: str):
    return KEYS[name].public_key()


def _resign(data: bytes, payload: bytes, *signers: str) -> bytes:
    """A bundle file with ``payload`` (any bytes) and signatures by ``signers`` over it."""
    doc = json.loads(data)
    doc["payload"] = base64.b64encode(payload).decode()
    doc["signatures"] = [{"id": KEYS[s].key_id, "signature": base64.b64encode(KEYS[s].sign(SIGNATURE_LABEL + payload))
                          .decode()} for s in signers]
    return (json.dumps(doc, indent=2) + "\n").encode()


def cases() -> dict[str, list[tuple[bytes, int | str]]]:
    b1 = TrustBundle.initial(_pub("root_1"))
    b2 = b1.with_signer(_pub("signer_a"), ["model:detector*"])
    b3 = b2.with_signer(_pub("signer_b"), ["model:*", "engine"])
    b4 = b3.revoking(KEYS["signer_a"].key_id)
    b5 = b4.with_root(_pub("root_2"))
    b6 = b5.with_signer(_pub("intruder"), ["blob"])  # a new signer, under the new root
    s = {n: b.sign(KEYS["root_1"]) for n, b in (("1", b1), ("2", b2), ("3", b3), ("4", b4))}
    rotated = b5.sign(KEYS["root_1"], KEYS["root_2"])
    after = b6.sign(KEYS["root_2"])
    added = json.loads(s["2"])
    tampered = b2.with_signer(_pub("intruder"), ["*"])
    added["payload"] = base64.b64encode(tampered.payload()).decode()  # signer added, signature kept
    widened = b2.with_signer(_pub("signer_a"), ["*"])  # signer_a's scope widened to everything
    twin = TrustBundle(2, _pub("root_1"), b3.signers).sign(KEYS["root_1"])
    uncanonical = b2.payload().replace(b'"format"', b' "format"', 1)
    duplicate = b2.payload()[:-1] + b',"serial":9}'
    miswritten = TrustBundle(2, _pub("root_1"), {}, frozenset({KEYS["signer_a"].key_id.upper()}))  # names no key
    return {
        "valid_sequence": [(s["1"], 1), (s["2"], 2), (s["3"], 3), (s["4"], 4), (rotated, 5), (after, 6)],
        "valid_skip_ahead": [(s["1"], 1), (s["4"], 4)],
        "valid_same_bundle_twice": [(s["2"], 2), (s["2"], 2)],
        "fail_rollback": [(s["3"], 3), (s["2"], "RollbackError")],
        "fail_signer_added_not_resigned": [(s["1"], 1), ((json.dumps(added, indent=2) + "\n").encode(), "TamperedError")],
        "fail_same_serial_other_content": [(s["2"], 2), (twin, "TamperedError")],
        "fail_signed_by_revoked_signer": [(s["4"], 4), (_resign(s["4"], b4.with_signer(_pub("intruder")).payload(),
                                                                "signer_a"), "TamperedError")],
        "fail_scope_widened_by_non_root": [(s["2"], 2), (widened.sign(KEYS["signer_a"]), "TamperedError")],
        "fail_unsigned": [(_resign(s["1"], b1.payload()), "TamperedError")],
        "fail_root_rotation_without_old_root": [(s["4"], 4), (b5.sign(KEYS["root_2"]), "TamperedError")],
        "fail_root_rotation_without_new_root": [(s["4"], 4), (b5.sign(KEYS["root_1"]), "TamperedError")],
        "fail_old_root_after_rotation": [(rotated, 5), (b6.sign(KEYS["root_1"]), "TamperedError")],
        "fail_payload_not_canonical": [(_resign(s["2"], uncanonical, "root_1"), "FormatError")],
        "fail_payload_duplicate_member": [(_resign(s["2"], duplicate, "root_1"), "FormatError")],
        "fail_revoked_id_not_a_signer_id": [(s["1"], 1), (miswritten.sign(KEYS["root_1"]), "FormatError")],
    }


def main() -> None:
    doc = {
        "comment": "ortseal trust bundle v1 vectors (docs/format.md); made by generate_trust_vectors.py",
        "keys": {name: {"seed": seed.hex(), "id": KEYS[name].key_id,
                        "public": base64.b64encode(KEYS[name].public_key().public_bytes_raw()).decode()}
                 for name, seed in SEEDS.items()},
        "pinned_root": "root_1",
        "cases": {name: [{"bundle": data.decode(), "accept": result} for data, result in steps]
                  for name, steps in cases().items()},
    }
    out = Path(__file__).with_name("trust_v1.json")
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
