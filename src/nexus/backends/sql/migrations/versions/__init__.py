"""Revisions of the state store schema, oldest first by `down_revision`."""
