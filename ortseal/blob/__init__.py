"""The sealed-blob format, version 2 (spec: ``docs/format.md``), one module per part of the spec:

- ``_format``: constants, the header, lengths and key derivation ("Header", "Keys");
- ``_seal``: sealing a blob (``Sealer``, ``seal_bytes``, streaming with ``BlobWriter``);
- ``_open``: every check before any plaintext exists, then decryption (``Opener``, ``unseal_bytes``).

    blob = seal_bytes(data, keys, context="my-app/config")
    data = unseal_bytes(blob, keys, context="my-app/config")
"""

from ._format import (
    ALGORITHM_AES256GCM_HKDF_SHA256_ED25519,
    BLOB_KEY_LABEL,
    CONTENT_LABEL,
    CONTEXT_LABEL,
    DEFAULT_SEGMENT_SIZE,
    DIGEST_SIZE,
    FIXED_HEADER_SIZE,
    FLAG_SIGNED,
    LAST_SEGMENT,
    MAGIC,
    MAX_HEADER_SIZE,
    MAX_ID_LENGTH,
    MAX_RELEASE,
    MAX_SEGMENT_SIZE,
    MAX_SEGMENTS,
    MIN_SEGMENT_SIZE,
    NONCE_PREFIX_SIZE,
    PURPOSE_BLOB,
    RESEAL_HINT,
    SALT_SIZE,
    SIGNATURE_LABEL,
    SIGNATURE_SIZE,
    TAG_SIZE,
    VERSION,
    Buffer,
    Context,
    Header,
    blob_key,
    check_release,
    context_digest,
    new_header,
    parse_header,
    plaintext_size,
    sealed_length,
)
from ._open import BlobSource, Opener, read_header, unseal_bytes, unseal_into
from ._seal import BlobWriter, SealedInfo, Sealer, seal_bytes, seal_stream

__all__ = ["seal_bytes", "unseal_bytes", "unseal_into", "plaintext_size", "sealed_length", "parse_header",
           "read_header", "Header", "new_header", "Sealer", "SealedInfo", "BlobWriter", "seal_stream", "BlobSource",
           "Opener", "blob_key", "context_digest", "check_release", "Buffer", "Context",
           "ALGORITHM_AES256GCM_HKDF_SHA256_ED25519", "BLOB_KEY_LABEL", "CONTENT_LABEL", "CONTEXT_LABEL",
           "DEFAULT_SEGMENT_SIZE", "DIGEST_SIZE", "FIXED_HEADER_SIZE", "FLAG_SIGNED", "LAST_SEGMENT", "MAGIC",
           "MAX_HEADER_SIZE", "MAX_ID_LENGTH", "MAX_RELEASE", "MAX_SEGMENTS", "MAX_SEGMENT_SIZE", "MIN_SEGMENT_SIZE",
           "NONCE_PREFIX_SIZE", "PURPOSE_BLOB", "RESEAL_HINT", "SALT_SIZE", "SIGNATURE_LABEL", "SIGNATURE_SIZE",
           "TAG_SIZE", "VERSION"]
