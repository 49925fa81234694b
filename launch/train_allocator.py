# The ``dynmec-train-allocator`` command: dynmec_jax/cli/train_allocator.py.
from dynmec_jax.cli.train_allocator import __doc__, run  # noqa: F401 (the usage that --help prints)

if __name__ == "__main__":
    run()
