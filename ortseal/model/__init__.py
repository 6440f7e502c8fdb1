"""Sealed models (spec: ``docs/sealed-models.md``, ``docs/format.md``), one stage per module, data flowing
one way: the file read once (``_graph``) -> its seal record and manifest (``_record``) -> verification
(``verify``) -> the opened model (``open``, ``tensors``, ``ramdir``) -> what ORT gets (``session``,
``fallback``). ``seal`` makes sealed models, ``report`` inspects and verifies them, ``schema`` is the
Unseal op and the tensor kinds it carries.

The public names are ``ortseal``'s own (``ortseal.seal_model``, ``ortseal.InferenceSession``...); this package
imports none of its modules, so that importing one stage loads only what that stage needs.
"""
