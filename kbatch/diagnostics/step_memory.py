"""The largest micro-batch whose update fits in a device's memory, and the accumulation that keeps
a global batch within it.

A global batch B on R replicas with k accumulation steps gives each device micro-batches of
B / (R k) examples. The batches a controller picks are doublings of the first, and k is a power of
two, so every micro-batch is the first one times a power of two: measuring the update's memory at
those sizes (the compiler's figure for the whole program: weights, optimizer slots, gradients and
the activations the backward pass keeps, which grow with the micro-batch but not in exact
proportion, as XLA fuses and reuses buffers differently at each size) finds the largest that fits
(`largest_micro_batch`), and that decides the fewest accumulation steps each batch needs
(`accumulation_for`): the choice of Pollux (Qiao et al., OSDI 2021), which re-decides the
per-device batch and its accumulation with the global batch. NumPy only.
"""


def in_words(size):
    """`size` bytes as KiB, MiB or GiB, three significant digits: 57,300 -> "56 KiB"."""
    for unit, power in (("GiB", 3), ("MiB", 2)):
        if size >= 1024**power:
            return f"{size / 1024**power:.3g} {unit}"
    return f"{size / 1024:.3g} KiB"


def passes(accumulation_steps, halves_at_one=False):
    """The passes of one update over its batch: its accumulation steps, or 2 for one step that the
    noise scale splits in halves (`halves_at_one`, one device measuring it)."""
    return 2 if accumulation_steps == 1 and halves_at_one else accumulation_steps


def largest_micro_batch(measure, start, most, budget_bytes):
    """(largest, measured): the largest of `start` x 2**j (j of either sign, at most `most`) whose
    `measure(micro_batch)` bytes are within `budget_bytes` (0 if not even the smallest, 1 or
    less, fits), and {micro-batch: bytes} of the sizes measured, doubling up or halving down from
    `start`: memory grows with the micro-batch."""
    measured = {}

    def fits(size):
        measured[size] = measure(size)
        return measured[size] <= budget_bytes

    size = start
    if fits(size):
        while 2 * size <= most and fits(2 * size):
            size *= 2
        return size, measured
    while size % 2 == 0:
        size //= 2
        if fits(size):
            return size, measured
    return 0, measured


def accumulation_for(batch, replicas, largest, smallest=1, halves_at_one=False):
    """The fewest accumulation steps k >= `smallest` (a power of two times it) with which a global
    `batch` on `replicas` devices splits evenly into micro-batches of at most `largest` examples per
    device; None when no such k exists (the batch does not fit). `largest` None: no bound.
    `halves_at_one`: an update without accumulation passes over two halves of its batch (the noise
    scale's on one device), so k = 1 holds half the batch at a time, as k = 2 does."""
    k = smallest
    while True:
        split = replicas * passes(k, halves_at_one)
        if batch % split:
            return None
        if largest is None or batch // split <= largest:
            return k
        k *= 2
