"""Training of PaGeR: losses, learning-rate schedule, EMA, checkpoint I/O and the Accelerate loop.

Import the pieces from their modules (``pager.training.losses``, ``.schedule``, ``.ema``,
``.checkpoint``, ``.trainer``); this package imports nothing heavy by itself.
"""
