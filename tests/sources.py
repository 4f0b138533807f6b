"""Test doubles shared by the training tests."""

import numpy as np


class ArraySource:
    """In-memory batch source; optionally fails after a number of batches (a killed job)."""

    def __init__(self, x, fail_after=None):
        self.x = x
        self.fail_after = fail_after
        self.calls = 0

    def __len__(self):
        return len(self.x)

    def batch(self, index):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        return self.x[np.asarray(index)]
