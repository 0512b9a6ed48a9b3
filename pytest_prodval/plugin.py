"""pytest-prodval hooks (placeholder until the core lands)."""
