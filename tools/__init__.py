"""Command-line tools (absl scripts) that live beside the package, not in it."""
