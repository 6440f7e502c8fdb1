"""The ``ortseal`` command line: a thin shell over the public API.

Every command exits 0 on success and 1 with a one-line ``error: ...`` otherwise.
"""

from __future__ import annotations

import sys

import click

from ._version import __version__
from .clikit import LOG_LEVELS, Passphrase, fail_cleanly, load_keys, passphrase_options, setup_logging
from .ep_plugin.commands import cache
from .keys import KeySet
from .ops.commands import inspect, seal, verify


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ortseal")
@click.option("-q", "--quiet", is_flag=True, help="Errors only: no progress bars, no warnings.")
@click.option("--log-level", type=click.Choice(LOG_LEVELS), default="warning", show_default=True,
              help="What the ortseal logger prints on stderr.")
@click.pass_context
def main(ctx: click.Context, quiet: bool, log_level: str) -> None:
    """Keep ONNX Runtime model weights and TensorRT engine caches sealed at rest."""
    ctx.obj = {"quiet": quiet}
    setup_logging(log_level, quiet)


@main.command()
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Keyset file to write (mode 0600).")
@passphrase_options
@click.option("--protect", is_flag=True, help="Protect the keyset with a passphrase typed at a prompt.")
@click.option("--overwrite", is_flag=True, help="Replace an existing file.")
@fail_cleanly
def keygen(output: str, passphrase: Passphrase, protect: bool, overwrite: bool) -> None:
    """Make a keyset: one AES-256 content key and one Ed25519 signing key (protected by a passphrase when
    one is given, or with --protect)."""
    ks = KeySet.generate()
    ks.save(output, passphrase.for_new_keyset(protect), overwrite=overwrite)
    click.echo(f"wrote {output}: content key {ks.content_key_ids[0]}, signing key {ks.signing_key_ids[0]}")


@main.command()
@click.argument("keyset", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Public keyset file to write.")
@passphrase_options
@click.option("--overwrite", is_flag=True, help="Replace an existing file.")
@fail_cleanly
def pubkey(keyset: str, output: str, passphrase: Passphrase, overwrite: bool) -> None:
    """Export the public key(s) of KEYSET: what a device needs to check signatures."""
    public = load_keys(keyset, passphrase).public()
    public.save(output, overwrite=overwrite)
    click.echo(f"wrote {output}: trusted keys {', '.join(public.trusted_key_ids)}")


@main.command()
@click.option("--workdir", type=click.Path(file_okay=False), help="Work in this folder instead of a temporary one.")
@fail_cleanly
def demo(workdir: str | None) -> None:
    """Show the kit's main job step by step, with a fresh key in a temporary folder."""
    from .demo import run_demo

    sys.exit(run_demo(workdir))


for command in (seal, inspect, verify, cache):
    main.add_command(command)
