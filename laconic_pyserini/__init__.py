"""laconic-pyserini: LACONIC learned sparse retrieval on Pyserini/Anserini.

Importing this package is cheap on purpose: it starts no JVM and imports no torch. The JVM is started
by :func:`laconic_pyserini.jvm.start` the first time a module that needs Anserini asks for it, and torch
only by the modules that encode.
"""

__version__ = "0.1.0"
