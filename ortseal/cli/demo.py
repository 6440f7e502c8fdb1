"""``ortseal demo``: the kit's main jobs on embedded defaults, step by step, in a temporary folder."""

from __future__ import annotations

import contextlib
import shlex
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..blob import parse_header, seal_bytes, unseal_bytes
from ..keys import KeySet
from ._demokit import DemoFailure, expect_refused, say


def blob_steps(work: Path, keys: KeySet) -> None:
    """Seal and open one blob; show what a flipped byte and a wrong context get."""
    say("\n== 1. Sealed blobs ==")
    secret = b"model weights or a TensorRT engine " * 1000
    blob = seal_bytes(secret, keys, context="demo/tensor")
    (work / "demo.blob").write_bytes(blob)
    h = parse_header(blob)
    say(f"  sealed {len(secret)} bytes -> {len(blob)} bytes: key {h.key_id}, signer {h.signer_id}, "
        f"{h.segment_count} segment(s)")
    if unseal_bytes(blob, keys, context="demo/tensor") != secret:
        raise DemoFailure("round trip changed the data")
    say("  opened in memory with the right key and context: identical")
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 0x01
    expect_refused("one flipped bit", lambda: unseal_bytes(bytes(flipped), keys, context="demo/tensor"))
    expect_refused("another context", lambda: unseal_bytes(blob, keys, context="demo/other-tensor"))
    expect_refused("another keyset", lambda: unseal_bytes(blob, KeySet.generate(), context="demo/tensor"))


def _steps() -> list[Callable[[Path, KeySet], None]]:
    from .demo_cache import engine_cache_steps
    from .demo_model import model_steps

    return [blob_steps, model_steps, engine_cache_steps]


def run_demo(workdir: str | None = None) -> int:
    """Run every demo step; returns the process exit code."""
    with contextlib.ExitStack() as stack:
        work = Path(workdir) if workdir else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ortseal-demo-")))
        work.mkdir(parents=True, exist_ok=True)
        keys = KeySet.generate()
        keys.save(work / "keys.json", overwrite=True)
        say(f"ortseal demo in {work}: fresh keyset {keys.content_key_ids[0]} (signing key {keys.signing_key_ids[0]})")
        try:
            for step in _steps():
                step(work, keys)
        except DemoFailure as exc:
            say(f"demo FAILED: {exc}")
            return 1
    say("\ndemo passed: everything opened with the right key, every alteration was refused")
    say_try_it(Path(workdir) if workdir else None)
    return 0


def try_it_commands(folder: Path) -> list[str]:
    """Commands that seal, inspect and verify the demo's model again, in ``folder`` (a kept demo folder)."""
    q = lambda name: shlex.quote(str(folder / name))  # noqa: E731
    return [f"ortseal seal {q('mul_1.onnx')} -o {q('mine.sealed.onnx')} --keys {q('keys.json')} --min-bytes 1 "
            "--overwrite",
            f"ortseal inspect {q('mine.sealed.onnx')}",
            f"ortseal verify {q('mine.sealed.onnx')} --keys {q('keys.json')}",
            f"ortseal cache verify {q('trt_cache')} --keys {q('keys.json')}"]


def say_try_it(kept: Path | None) -> None:
    say("\nTry it yourself" + (f" (the demo's files are in {kept}):" if kept else
                               ": keep the demo's files with\n  ortseal demo --workdir ortseal-demo\nthen"))
    for command in try_it_commands(kept or Path("ortseal-demo")):
        say(f"  {command}")
