# The ``dynmec-sweep`` command: dynmec_jax/cli/sweep.py.
from dynmec_jax.cli.sweep import __doc__, run  # noqa: F401 (the usage that --help prints)

if __name__ == "__main__":
    run()
