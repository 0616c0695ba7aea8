"""Builds the Cython extensions. No CUDA toolkit, driver or libtorch is needed at build time:
libcuda is opened at run time and torch is reached through the DLPack C exchange API."""
from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension("fastdispatch.launchers._driver", ["fastdispatch/launchers/_driver.pyx"],
              libraries=["dl"], extra_compile_args=["-O3"]),
    Extension("fastdispatch._grid", ["fastdispatch/_grid.pyx"], extra_compile_args=["-O3"]),
    Extension("fastdispatch._keys", ["fastdispatch/_keys.pyx"], extra_compile_args=["-O3"]),
]

setup(ext_modules=cythonize(extensions, compiler_directives={"language_level": "3"}))
