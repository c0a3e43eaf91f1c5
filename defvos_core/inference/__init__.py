"""defvos_core.inference."""
