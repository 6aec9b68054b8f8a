"""Build hook for pbr, which reads everything else from setup.cfg.

pbr maps no setup.cfg key to setuptools' ``license_expression``, so the SPDX
license expression (PEP 639, core metadata 2.4) is given here.
"""

import setuptools

setuptools.setup(pbr=True, license_expression="Apache-2.0")
