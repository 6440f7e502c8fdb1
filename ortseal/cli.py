"""The ``ortseal`` command line: a thin shell over the public API.

Every command exits 0 on success and 1 with a one-line ``error: ...`` otherwise.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from ._version import __version__
from .errors import OrtsealError
from .keys import KeySet


def fail_cleanly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library and OS errors into one line on stderr and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BrokenPipeError:
            # the reader went away (``ortseal inspect ... | head``): stop quietly, as a filter does
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
        except (OrtsealError, OSError, ValueError) as exc:
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc

    return wrapper


def _passphrase(env_var: str | None) -> str | None:
    if env_var is None:
        return None
    value = os.environ.get(env_var)
    if not value:
        raise click.ClickException(f"environment variable {env_var} (from --passphrase-env) is not set or empty")
    return value


def load_keys(path: str, passphrase_env: str | None) -> KeySet:
    """Load ``--keys``: a keyset file, or ``env:VAR`` for a keyset held in an environment variable."""
    if path.startswith("env:"):
        return KeySet.from_env(path[4:], _passphrase(passphrase_env))
    if not os.path.isfile(path):
        raise click.ClickException(f"--keys {path}: no such keyset file (make one with: ortseal keygen -o {path})")
    return KeySet.load(path, _passphrase(passphrase_env))


keys_option = click.option("--keys", "keys_path", required=True, metavar="KEYS",
                           help="Keyset JSON file, or env:VAR to read it from an environment variable.")
passphrase_option = click.option("--passphrase-env", metavar="VAR",
                                 help="Environment variable holding the keyset's passphrase.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ortseal")
def main() -> None:
    """Keep ONNX Runtime model weights and TensorRT engine caches sealed at rest."""


@main.command()
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Keyset file to write (mode 0600).")
@passphrase_option
@click.option("--overwrite", is_flag=True, help="Replace an existing file.")
@fail_cleanly
def keygen(output: str, passphrase_env: str | None, overwrite: bool) -> None:
    """Make a keyset: one AES-256 content key and one Ed25519 signing key."""
    ks = KeySet.generate()
    ks.save(output, _passphrase(passphrase_env), overwrite=overwrite)
    click.echo(f"wrote {output}: content key {ks.content_key_ids[0]}, signing key {ks.signing_key_ids[0]}")


@main.command()
@click.argument("keyset", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Public keyset file to write.")
@passphrase_option
@click.option("--overwrite", is_flag=True, help="Replace an existing file.")
@fail_cleanly
def pubkey(keyset: str, output: str, passphrase_env: str | None, overwrite: bool) -> None:
    """Export the public key(s) of KEYSET: what a device needs to check signatures."""
    public = load_keys(keyset, passphrase_env).public()
    public.save(output, overwrite=overwrite)
    click.echo(f"wrote {output}: trusted keys {', '.join(public.trusted_key_ids)}")


@main.command()
@click.option("--workdir", type=click.Path(file_okay=False), help="Work in this folder instead of a temporary one.")
@fail_cleanly
def demo(workdir: str | None) -> None:
    """Show the kit's main job step by step, with a fresh key in a temporary folder."""
    from .demo import run_demo

    sys.exit(run_demo(workdir))


# The ops and ep_plugin layers add their commands to ``main``.
from .ep_plugin import commands as _ep_commands  # noqa: E402,F401
from .ops import commands as _ops_commands  # noqa: E402,F401
