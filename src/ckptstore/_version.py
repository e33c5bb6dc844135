"""The package version.

In a module of its own so that code inside the package reads it without importing the public facade
(``ckptstore/__init__.py`` imports nearly every module, so depending on it is an import cycle).
"""

__version__ = "0.1.0"
