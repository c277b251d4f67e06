"""State synchronisation between components: versions, conflicts, resolution, propagation."""
