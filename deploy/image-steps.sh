#!/bin/sh
# The build steps of fabric's container image: deploy/Containerfile runs this
# script, and .ci/run runs it outside any container, into temporary
# directories, so the steps are tested without a container build.
#
#   sh deploy/image-steps.sh SOURCE PREFIX CONFIG_DIR
#
#   SOURCE      the fabric checkout to install
#   PREFIX      where fabric goes: a virtual environment (/opt/fabric in the image)
#   CONFIG_DIR  where the default manifest goes (/etc/fabric in the image)
#
# Needs python3 (3.11 or later) with the venv module, and pip's access to
# the package index (or a wheel cache) for the pinned dependencies of
# pyproject.toml.
set -eu

usage="usage: image-steps.sh SOURCE PREFIX CONFIG_DIR"
src=$(cd "${1:?$usage}" && pwd)
prefix=${2:?$usage}
config=${3:?$usage}

# 1. fabric and its pinned dependencies (pyproject.toml), in a virtual environment
python3 -m venv "$prefix"
"$prefix/bin/python" -m pip install --quiet "$src"

# 2. the example's component source (built into wasm on first start, then cached)
mkdir -p "$prefix/share/fabric" "$config"
rm -rf "$prefix/share/fabric/components"
cp -R "$src/deploy/components" "$prefix/share/fabric/components"

# 3. the default manifest (the Kubernetes ConfigMap is mounted over it), its
#    paths pointed at PREFIX
sed "s|/opt/fabric/|$prefix/|g" "$src/deploy/kubernetes/fabric.toml" > "$config/fabric.toml"

# 4. smoke: the console script runs, the native service classes import and
#    the manifest is valid (files included)
"$prefix/bin/fabric" validate "$config/fabric.toml"
