"""defvos_core.model."""
