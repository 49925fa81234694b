# The ``dynmec-evaluate-any-n`` command: dynmec_jax/cli/evaluate_any_n.py.
from dynmec_jax.cli.evaluate_any_n import __doc__, run  # noqa: F401 (the usage that --help prints)

if __name__ == "__main__":
    run()
