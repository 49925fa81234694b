# The ``dynmec-train-droo`` command: dynmec_jax/cli/train_droo.py.
from dynmec_jax.cli.train_droo import __doc__, run  # noqa: F401 (the usage that --help prints)

if __name__ == "__main__":
    run()
