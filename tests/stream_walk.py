"""`walk`: the independent reference for step arithmetic, the example stream taken one batch at a
time in exact fractions (tests/test_ledger.py, tests/test_plan.py)."""

from fractions import Fraction


def walk(batch_sizes, boundaries, num_examples, num_epochs):
    """Each update takes the batch of the phase its first example falls in; the stream goes on
    until `num_epochs` epochs are seen. Returns (examples seen before it, phase) per update."""
    seen, updates = 0, []
    while Fraction(seen, num_examples) < num_epochs:
        phase = sum(Fraction(seen, num_examples) >= b for b in boundaries)
        updates.append((seen, phase))
        seen += batch_sizes[phase]
    return updates
