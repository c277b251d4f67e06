"""The memory tiers in front of the store: in-process hot, Redis warm, and their coherence."""
