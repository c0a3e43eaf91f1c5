"""defvos_core.evaluation."""
