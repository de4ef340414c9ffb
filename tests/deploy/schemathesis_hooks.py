"""Schemathesis hooks for `imgcls serve` (loaded with SCHEMATHESIS_HOOKS=tests.deploy.schemathesis_hooks).

The contract declares each upload part's media types (image/png, image/jpeg, ...): for each, these
hooks generate real image files of that type, so that schema-valid requests are really valid and
reach the model. With IMGCLS_ST_IMAGES=broken they generate broken files instead (random bytes, empty
files, mutated real images), which the server must refuse with a documented 4xx.
"""

from __future__ import annotations

import os

import schemathesis

from tests.deploy.strategies import MEDIA_FORMATS, broken_images, real_images

for media_type, fmt in MEDIA_FORMATS.items():
    strategy = broken_images() if os.environ.get("IMGCLS_ST_IMAGES") == "broken" else real_images(fmt)
    schemathesis.openapi.media_type(media_type, strategy)
