"""Decision history and preference learning over the store's decisions and preferences."""
