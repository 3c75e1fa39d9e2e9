"""The edge: the `unigeoclip` command and the demo. Nothing in the library imports this package."""
