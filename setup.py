"""Build hook for pbr, which reads everything else from setup.cfg."""

import setuptools

setuptools.setup(pbr=True)
