"""The Lance sample store: its schema, the checks every row passes, the splits, the store itself (no Ray)."""
