# SPDX-License-Identifier: BSD-2-Clause
"""Install the vac package with the `vac` and `vacd` commands."""
from setuptools import find_packages, setup

setup(
    name="vac",
    version="4.0.0",
    description="Vac: a logical-machine factory for grid and HPC sites",
    python_requires=">=3.9",
    packages=find_packages(include=["vac", "vac.*"]),
    package_data={"vac.backends.libvirt": ["templates/*"]},
    install_requires=["Jinja2>=3", "pycurl>=7.43"],
    extras_require={
        "docker": ["docker>=6"],
        "libvirt": ["libvirt-python", "pycdlib"],
        "proxy": ["cryptography"],
        "apptainer": ["spython"],
        "test": ["pytest", "hypothesis"],
    },
    entry_points={"console_scripts": ["vac = vac.cli:main", "vacd = vac.daemon:main"]},
)
