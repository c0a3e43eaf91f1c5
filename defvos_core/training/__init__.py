"""defvos_core.training."""
