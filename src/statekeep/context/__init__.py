"""The context engine: capture, relations, relevance, reconstruction, the resume brief."""
