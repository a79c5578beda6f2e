"""Finished runs as files others can load (`plmscale export`), and the two uses of a trained model:
per-sequence scores (`plmscale score`) and sampling (`plmscale generate`). docs/export.md says how."""


def load_exported(directory):
    """The plmscale Transformer of an export directory (see plmscale.export.files.load_exported)."""
    from plmscale.export.files import load_exported as load

    return load(directory)
