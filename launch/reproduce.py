# The ``dynmec-reproduce`` command: dynmec_jax/cli/reproduce.py.
from dynmec_jax.cli.reproduce import __doc__, run  # noqa: F401 (the usage that --help prints)

if __name__ == "__main__":
    run()
