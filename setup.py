import os.path as osp
import re

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))


def readme():
    with open(osp.join(HERE, 'README.md'), encoding='utf-8') as f:
        return f.read()


def get_version():
    with open(osp.join(HERE, 'ailurus_mm', 'version.py'), encoding='utf-8') as f:
        return re.search(r"__version__ = '([^']+)'", f.read()).group(1)


def parse_requirements(fname):
    """Read a requirements file, following ``-r`` includes and dropping comments."""
    reqs = []
    with open(osp.join(HERE, fname), encoding='utf-8') as f:
        for line in f:
            line = line.split('#', 1)[0].strip()
            if not line:
                continue
            if line.startswith('-r '):
                reqs += parse_requirements(osp.join(osp.dirname(fname), line[3:].strip()))
            else:
                reqs.append(line)
    return reqs


setup(
    name='ailurus_mm',
    version=get_version(),
    description='AiluRus adaptive-resolution token clustering for OpenMMLab '
    'Vision Transformers (MMSegmentation, MMDetection)',
    long_description=readme(),
    long_description_content_type='text/markdown',
    license='Apache License 2.0',
    packages=find_packages(include=['ailurus_mm', 'ailurus_mm.*']),
    include_package_data=True,
    python_requires='>=3.11',
    # mmcv must be built against the installed torch: tools/setup_env.sh does
    # it in the right order; these pins only state what is required.
    install_requires=parse_requirements('requirements/runtime.txt')
    + parse_requirements('requirements/mminstall.txt'),
    extras_require={
        'tests': parse_requirements('requirements/tests.txt'),
        'optional': parse_requirements('requirements/optional.txt'),
    },
    zip_safe=False,
)
