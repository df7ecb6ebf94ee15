"""Ship the top-level conf/ inside the package as citylens/conf, so a wheel install finds its configs."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithConfigs(build_py):
    """build_py that also copies conf/ (the configs users read and edit in a checkout) into citylens/conf."""

    def run(self) -> None:
        super().run()
        if not self.editable_mode:
            target = Path(self.build_lib) / "citylens" / "conf"
            self.copy_tree(str(Path(__file__).parent / "conf"), str(target))


setup(cmdclass={"build_py": BuildWithConfigs})
