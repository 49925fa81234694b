# The ``dynmec-compare-allocators`` command: dynmec_jax/cli/compare_allocators.py.
from dynmec_jax.cli.compare_allocators import __doc__, run  # noqa: F401 (the usage that --help prints)

if __name__ == "__main__":
    run()
