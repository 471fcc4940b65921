"""Training loops (one per model family), with exact resume."""
