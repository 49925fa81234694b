# The ``dynmec-tune-gate`` command: dynmec_jax/cli/tune_gate.py.
from dynmec_jax.cli.tune_gate import __doc__, run  # noqa: F401 (the usage that --help prints)

if __name__ == "__main__":
    run()
