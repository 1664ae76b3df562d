"""The command line and the tools behind it: ``qapp serve``, ``qapp race`` and friends."""
