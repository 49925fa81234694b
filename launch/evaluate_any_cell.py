# The ``dynmec-evaluate-any-cell`` command: dynmec_jax/cli/evaluate_any_cell.py.
from dynmec_jax.cli.evaluate_any_cell import __doc__, run  # noqa: F401 (the usage that --help prints)

if __name__ == "__main__":
    run()
