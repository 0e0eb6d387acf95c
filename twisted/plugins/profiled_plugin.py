"""The twistd plugin for profiled.

Kept tiny on purpose: twistd imports every plugin file whenever it lists
plugins, so the real module (profiled.tap) is only imported when this
plugin is actually used.
"""

from twisted.application.service import ServiceMaker

profiled = ServiceMaker(
    "profiled",
    "profiled.tap",
    "Avatar image service: upload API, crunch worker and image proxy.",
    "profiled",
)
