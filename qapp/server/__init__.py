"""Serving: ``qapp serve``'s supervisor, listening sockets and workers (hypercorn, granian)."""
