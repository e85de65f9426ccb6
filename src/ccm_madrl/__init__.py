"""ccm_madrl: the Client-Master MADRL system for MEC task offloading, a gradient-flow monitor for
any PyTorch actor-critic, and the tools to study why actors stop learning."""

# the one place of the version: pyproject.toml reads it ([tool.setuptools.dynamic]), provenance.json
# records it, CHANGELOG.md's first section is this release
__version__ = "0.2.0"

__all__ = ["__version__"]
