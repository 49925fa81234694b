# The ``dynmec-evaluate-joint`` command: dynmec_jax/cli/evaluate_joint.py.
from dynmec_jax.cli.evaluate_joint import __doc__, run  # noqa: F401 (the usage that --help prints)

if __name__ == "__main__":
    run()
