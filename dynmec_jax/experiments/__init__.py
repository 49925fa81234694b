"""Section V of the paper: the names of its methods and axes, and its claims as data."""
