"""io layer (see ARCHITECTURE.md)."""
