# SPDX-License-Identifier: BSD-2-Clause
"""Install the vac package with the `vac` and `vacd` commands."""
import os
import re

from setuptools import find_packages, setup


def _version() -> str:
    """The one version string, vac/__init__.py's __version__ (read, not imported)."""
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "vac", "__init__.py"),
              encoding="utf-8") as f:
        return re.search(r'^__version__ = "([^"]+)"$', f.read(), re.M).group(1)


setup(
    name="vac",
    version=_version(),
    description="Vac: a logical-machine factory for grid and HPC sites",
    python_requires=">=3.9",
    packages=find_packages(include=["vac", "vac.*"]),
    package_data={"vac.backends.libvirt": ["templates/*"], "vac.web": ["templates/*"]},
    install_requires=["Jinja2>=3", "pycurl>=7.43", "dirq>=1.7"],
    extras_require={
        "docker": ["docker>=6"],
        "libvirt": ["libvirt-python", "pycdlib"],
        "proxy": ["cryptography"],
        "apptainer": ["spython"],
        "metrics": ["prometheus-client>=0.17"],
        "test": ["pytest", "hypothesis"],
    },
    entry_points={"console_scripts": ["vac = vac.cli:main", "vacd = vac.daemon:main"]},
)
