# The ``dynmec-train-joint`` command: dynmec_jax/cli/train_joint.py.
from dynmec_jax.cli.train_joint import __doc__, run  # noqa: F401 (the usage that --help prints)

if __name__ == "__main__":
    run()
