"""The exceptions ortseal raises. Every one derives from :class:`OrtsealError`."""


class OrtsealError(Exception):
    """Base class of every error ortseal raises on purpose."""


class TamperedError(OrtsealError):
    """Authentication failed: a flipped bit, a truncated or swapped file, a wrong key or context,
    a missing or untrusted signature. The message says which check failed; nothing was opened."""


class RollbackError(TamperedError):
    """The file is authentic but older than the minimum release this deployment accepts."""


class KeyNotFoundError(OrtsealError):
    """The keyset holds no key with the id the blob names."""


class FormatError(OrtsealError):
    """The input is not an ortseal blob or model, or uses a version this ortseal cannot read."""


class UnsafeOptionError(OrtsealError):
    """An option would write plaintext weights or engines to disk, so ortseal refuses it."""


class SetupError(OrtsealError):
    """This machine or process cannot do what was asked, whatever the input: a file ortseal needs is missing
    (the engine-cache shim library), a folder it must use cannot be opened or made, there is no RAM-backed
    folder to open large weights in. The message says what to install, set or fix."""


class ProviderUnavailableError(SetupError):
    """An execution provider asked for through ortseal cannot run here (its ONNX Runtime build or the
    libraries it needs are missing); the message names what is missing and what to install."""


class CompileError(OrtsealError):
    """An execution provider could not compile a model, or refused the compiled model it made before; the
    message names the EP and what ONNX Runtime said."""


class RevokedError(TamperedError):
    """The file is signed by a key that a verified trust bundle revokes: refused even if the signature is valid."""


class SignerError(OrtsealError):
    """A signing key outside a keyset file (a PKCS#11 token, a KMS callback) could not sign, or returned a
    signature that does not verify against the public key it was set up with. Nothing was written."""


class TokenPinError(SignerError):
    """The PKCS#11 token refused the PIN (wrong, expired or locked): the message says which."""


class TokenObjectNotFoundError(SignerError):
    """The ``pkcs11:`` URI names no token, or no key object in the token (or more than one)."""


class TokenKeyTypeError(SignerError):
    """The key the ``pkcs11:`` URI names is not an Ed25519 key (an RSA or ECDSA key, say)."""


class TokenUnavailableError(SignerError):
    """The PKCS#11 module cannot be loaded, or the token was removed or stopped answering."""
