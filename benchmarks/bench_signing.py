"""What checking each signature costs, and what a token costs: one signature as sealing makes it, side by side.

    python benchmarks/bench_signing.py [--count 2000]          # + SoftHSM2 when SOFTHSM2_CONF and a URI are given
    SOFTHSM2_CONF=... python benchmarks/bench_signing.py --token 'pkcs11:token=T;object=K' --module M --pin-env PIN

Rows: the bare Ed25519 sign (cryptography), ortseal's KeySigner (sign, then verify against the public key,
as every Signer does), and the token's CKM_EDDSA through TokenSigner. Printed as ratios to the bare sign.
"""

from __future__ import annotations

import argparse
import os
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ortseal.signing import KeySigner

MESSAGE = b"ortseal v3 model signature\x00" + bytes(32)  # what a model's record signs: 59 bytes


def per_call(fn, count: int) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(count):
            fn(MESSAGE)
        best = min(best, (time.perf_counter() - start) / count)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--token")
    ap.add_argument("--module")
    ap.add_argument("--pin-env")
    args = ap.parse_args()
    key = Ed25519PrivateKey.generate()
    rows = [("Ed25519 sign (cryptography)", per_call(key.sign, args.count)),
            ("KeySigner: sign + verify", per_call(KeySigner(key).sign, args.count))]
    if args.token:
        from ortseal.pkcs11 import TokenSigner

        with TokenSigner(args.token, module=args.module, pin=os.environ.get(args.pin_env or "", None)) as token:
            rows.append(("TokenSigner (SoftHSM2): CKM_EDDSA + verify", per_call(token.sign, max(1, args.count // 10))))
    base = rows[0][1]
    for name, seconds in rows:
        print(f"{name:45s} {seconds * 1e6:8.1f} us  {seconds / base:6.2f}x")


if __name__ == "__main__":
    main()
