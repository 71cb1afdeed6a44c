"""Only the optional C extension lives here; the metadata is in setup.cfg."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        # optional: without a compiler greenws installs and runs in pure Python.
        Extension("greenws._speedups", ["greenws/_speedups.c"], optional=True)
    ]
)
