"""OS preparation: entries added to or replaced in the flattened tree before the
filesystem is written, so that the booted system is usable. Nothing is run in the image
and nothing is patched into a finished filesystem.

Each step is a module with one contract (prepare/step.py); prepare/steps.py lists them in
the order they run.
"""
