"""defvos_core.data."""
