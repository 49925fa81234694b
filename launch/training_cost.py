# The ``dynmec-training-cost`` command: dynmec_jax/cli/training_cost.py.
from dynmec_jax.cli.training_cost import __doc__, run  # noqa: F401 (the usage that --help prints)

if __name__ == "__main__":
    run()
