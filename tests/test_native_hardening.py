"""libortseal under AddressSanitizer and UBSan: a bounded libFuzzer run over everything it parses from
untrusted bytes (model opening, blob opening, keyset files: native/tests/fuzz.c). ORTSEAL_FUZZ_SECONDS sets
the fuzzing time (default 60). The opening attacks of tests/test_native.py and tests/test_native_models.py
rerun against hosts built with -DORTSEAL_SANITIZE=ON from .ci/run, with SANITIZER_ENV's settings.

ORT's libonnxruntime.so is not instrumented. That needs nothing special: gcc links libasan first into the
instrumented host (ASan must come first among the loaded libraries), ORT's allocations then go through
ASan's malloc, and leak checking stays on (no report from ORT). A sanitizer report makes the process exit
86 (ASan) or 87 (UBSan), codes no ortseal status has, so the tests' host wrapper fails on it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from native_host import BUILD, NATIVE, ROOT, shim_dir_arg

from ortseal import KeySet

VECTORS = ROOT / "tests" / "vectors"
SANITIZER_ENV = {"ASAN_OPTIONS": "exitcode=86:detect_leaks=1:abort_on_error=0",
                 "UBSAN_OPTIONS": "exitcode=87:print_stacktrace=1:halt_on_error=1"}

pytestmark = pytest.mark.skipif(not shutil.which("cmake"), reason="cmake is not installed")


def seeds(folder: Path) -> Path:
    """The fuzzer's seeds: the model vectors, every blob vector and the keyset vectors, each behind the byte
    that picks its parser (native/tests/fuzz.c)."""
    folder.mkdir(parents=True, exist_ok=True)
    blobs = json.loads((VECTORS / "blob_v2.json").read_text())
    for path in VECTORS.glob("*.sealed.onnx"):
        (folder / f"model-{path.stem}").write_bytes(b"\0" + path.read_bytes())
    for i, vector in enumerate(blobs["valid"] + blobs["invalid"]):
        (folder / f"blob-{i}").write_bytes(b"\1" + bytes.fromhex(vector["blob"]))
    for path in VECTORS.glob("keyset*.json"):
        (folder / f"keyset-{path.stem}").write_bytes(b"\2" + path.read_bytes())
    return folder


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("clang"), reason="clang is not installed (apt-get install clang): no libFuzzer")
def test_bounded_fuzzing_under_asan_and_ubsan_finds_nothing(tmp_path):
    build = BUILD.parent / "native-fuzz"
    env = {**os.environ, "CC": "clang", "CXX": "clang++"}
    for cmd in (["cmake", "-S", str(NATIVE), "-B", str(build), "-DCMAKE_BUILD_TYPE=RelWithDebInfo", "-DORTSEAL_FUZZ=ON",
                 shim_dir_arg()],
                ["cmake", "--build", str(build), "-j2", "--target", "ortseal_fuzz"]):
        done = subprocess.run(["nice", "-n", "10", *cmd], capture_output=True, text=True, env=env, check=False)
        if done.returncode and "OpenSSL" in done.stdout + done.stderr:
            pytest.skip("OpenSSL 3 development files are not installed (apt-get install libssl-dev)")
        assert done.returncode == 0, done.stdout + done.stderr
    blobs = json.loads((VECTORS / "blob_v2.json").read_text())
    unsigned = tmp_path / "unsigned.json"  # takes mutations past the signature into the parsers behind it
    unsigned.write_text(KeySet(content_keys={blobs["content_key_id"]: bytes.fromhex(blobs["content_key"])},
                               allow_unsigned=True).to_json())
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    seconds = int(os.environ.get("ORTSEAL_FUZZ_SECONDS", "60"))
    # A protected keyset seed runs scrypt at the spec's bound (128 MiB a call), and ASan's quarantine and shadow
    # keep RSS far above the live heap: RSS is capped generously, one allocation tightly (a hostile length).
    done = subprocess.run(
        ["nice", "-n", "10", str(build / "ortseal_fuzz"), f"-max_total_time={seconds}", "-max_len=65536", "-timeout=20",
         "-rss_limit_mb=6144", "-malloc_limit_mb=512", f"-artifact_prefix={tmp_path}/", str(corpus),
         str(seeds(tmp_path / "seeds"))],
        capture_output=True, text=True, timeout=seconds + 300, check=False,
        env={**os.environ, **SANITIZER_ENV, "ORTSEAL_FUZZ_FOLDER": str(VECTORS),
             "ORTSEAL_FUZZ_KEYSETS": f"{VECTORS / 'keyset_v1.json'}:{unsigned}"})
    findings = [p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "leak-", "timeout-", "oom-"))]
    assert done.returncode == 0 and not findings, f"{findings}\n{done.stderr[-6000:]}"
    assert "Done " in done.stderr  # the run went to its end
