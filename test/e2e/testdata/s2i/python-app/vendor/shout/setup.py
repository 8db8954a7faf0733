from setuptools import setup

setup(name="shout", version="1.0", packages=["shout"])
