"""The wire: everything that turns domain objects into bytes and back.

- ``orchgpt.iac.v1``: the protobuf code generated from proto/orchgpt/iac/v1/iac.proto (it stays
  where scripts/gen_protos.py writes it);
- ``codec``: protobuf <-> domain, the only converter between them (its primitives in
  ``codec_basics``, task events in ``codec_events``; ``codec`` exports them all);
- ``batching``: the ``Outbox`` that packs envelopes into ``Batch`` frames;
- ``journal``: the on-disk format of an agent's results journal;
- ``dicts``: domain <-> plain dict (JSON) for the store and the CLI's ``--json``.

Domain code (orchgpt.mesh, orchgpt.models, the store) never imports the generated ``_pb2``.
The old module paths (orchgpt.codec, orchgpt.batching, orchgpt.journal) re-export these.
"""
