"""Attaches to any PyTorch loop: events and probes (hooks), the Workbench, plugin loading."""
