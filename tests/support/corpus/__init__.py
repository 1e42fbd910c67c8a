"""A corpus of hand-written mail with the result each one must give."""
