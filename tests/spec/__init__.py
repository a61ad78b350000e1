"""The source document's code blocks, copied with `kailash.` replaced by `nexus.` (nothing else)."""
