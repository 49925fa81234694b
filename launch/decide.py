# The ``dynmec-decide`` command: dynmec_jax/cli/decide.py.
from dynmec_jax.cli.decide import __doc__, run  # noqa: F401 (the usage that --help prints)

if __name__ == "__main__":
    run()
