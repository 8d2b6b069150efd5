#!/usr/bin/env bash
# The annotation tools' own libraries, which the round-trip tests check our files against
# (docs/formats.md). None can be a plain extra: each pins an older OpenCV or a second cv2
# (datumaro: opencv-python-headless<5; label-studio-sdk: opencv-python-headless<4.13 and numpy
# 2.2; trackeval: opencv-python). They are installed without their pins; the parts the tests use
# run with our OpenCV 5 and NumPy 2 (checked). The tests that need one skip when it is missing.
set -euo pipefail
pip() { python3 -m pip install -q "$@"; }
pip --no-deps datumaro==1.13.12 trackeval==1.3.0 label-studio-sdk==2.1.2
# their dependencies that do not touch torch, numpy or OpenCV
pip "cachetools~=7.0" "defusedxml~=0.7" "imagesize~=2.0" "json-stream~=2.4" json-stream-rs-tokenizer \
    "pyarrow>=25" "ruamel.yaml~=0.19.1" "shapely~=2.1" "orjson~=3.10" tabulate==0.10.0 \
    lxml xmljson==0.2.1 jsonschema "jsf>=0.11.2,<0.12" "pyjwt>=2.13,<2.14" appdirs httpx ijson ujson requests-mock==1.12.1
