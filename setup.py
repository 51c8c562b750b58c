"""The one compiled part of Citygate: ``gateway.live._rtpsend`` (``gateway/live/_rtpsend.c``, through
cffi), the per-packet path of the WebRTC viewers' sender. Everything else is in pyproject.toml.

A machine without a C compiler still installs Citygate: the extension is then missing, and the
sender runs its Python path (``gateway.live.srtp_out``), which the gateway logs at start.
"""

from setuptools import setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler, no headers: install without the fast path
            self.warn(f"gateway.live._rtpsend was not built ({exc}); WebRTC viewers are sent to from Python")

    def build_extension(self, ext) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            self.warn(f"{ext.name} was not built ({exc}); WebRTC viewers are sent to from Python")


setup(cffi_modules=["gateway/live/_rtpsend_build.py:ffibuilder"], cmdclass={"build_ext": OptionalBuildExt})
