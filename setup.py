"""The package's files: every ``laconic_pyserini*`` package, plus the top-level YAML folders mapped into it.

``encoders/`` (encoder specs), ``eval/`` (reproduction recipes) and ``index_recipes/`` (index recipes) stay at the
top of the checkout, where users find them; a wheel carries them as ``laconic_pyserini/encoders/``,
``laconic_pyserini/recipes/`` and ``laconic_pyserini/index_recipes/``
(:mod:`laconic_pyserini.shipped` finds either). Everything else is in ``setup.cfg``.
"""

from setuptools import find_packages, setup

SHIPPED = {"laconic_pyserini.encoders": "encoders", "laconic_pyserini.recipes": "eval",
           "laconic_pyserini.index_recipes": "index_recipes"}

setup(
    packages=find_packages(include=["laconic_pyserini", "laconic_pyserini.*"]) + list(SHIPPED),
    package_dir=SHIPPED,
    package_data={name: ["*.yaml"] for name in SHIPPED},
)
